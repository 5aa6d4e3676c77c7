// The host-memory ParameterCopier.
#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/pack_table.h"
#include "receiver/parameter_copier.h"

namespace weightcast {
namespace {

class HostBuffer final : public CopierBuffer {
 public:
  // Not zero-filled: every byte is written before it is read.
  explicit HostBuffer(uint64_t bytes) : bytes_(new std::byte[std::max<uint64_t>(bytes, 1)]) {}
  std::byte* data() const override { return bytes_.get(); }

 private:
  std::unique_ptr<std::byte[]> bytes_;
};

class HostParameterCopier final : public ParameterCopier {
 public:
  int device() const override { return -1; }
  absl::StatusOr<std::unique_ptr<CopierBuffer>> Allocate(uint64_t bytes) override {
    return std::unique_ptr<CopierBuffer>(std::make_unique<HostBuffer>(bytes));
  }
  absl::Status CopyFromHost(std::byte* dst, const std::byte* src, uint64_t n) override {
    return Copy(dst, src, n);
  }
  absl::Status Copy(std::byte* dst, const std::byte* src, uint64_t n) override {
    if (n > 0) std::memcpy(dst, src, n);
    return absl::OkStatus();
  }
  absl::Status ReserveTable(size_t) override { return absl::OkStatus(); }
  absl::Status Run(std::span<const CopyEntry> table) override {
    ExecuteCopyTableOnHost(table);
    return absl::OkStatus();
  }
  absl::Status Wait() override { return absl::OkStatus(); }
};

}  // namespace

absl::Status CopierArena::Reserve(ParameterCopier& copier, uint64_t bytes, absl::string_view what) {
  if (bytes <= capacity_) return absl::OkStatus();
  Reset();
  absl::StatusOr<std::unique_ptr<CopierBuffer>> b = copier.Allocate(bytes);
  if (!b.ok()) {
    return absl::Status(b.status().code(), absl::StrCat(what, " (", bytes, " bytes): ",
                                                        b.status().message()));
  }
  buffer_ = *std::move(b);
  capacity_ = bytes;
  return absl::OkStatus();
}

std::unique_ptr<ParameterCopier> NewHostParameterCopier() {
  return std::make_unique<HostParameterCopier>();
}

}  // namespace weightcast
