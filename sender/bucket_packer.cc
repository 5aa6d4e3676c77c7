#include "sender/bucket_packer.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/checksum.h"
#include "common/status_macros.h"
#include "kernels/pack_reference.h"
#include "protocol/wire_format.h"

namespace weightcast {
namespace {

class HostBucketPacker final : public BucketPacker {
 public:
  bool device() const override { return false; }

  absl::Status Reserve(size_t bytes) override {
    for (auto& s : slots_) {
      if (s.size() < bytes) s.resize(bytes);
    }
    return absl::OkStatus();
  }
  std::byte* slot(int i) override { return slots_[i].data(); }

  absl::StatusOr<std::byte*> Scratch(size_t bytes) override {
    if (scratch_.size() < bytes) scratch_.resize(bytes);
    return scratch_.data();
  }

  absl::Status Pack(const PackInput& input, const Bucket& bucket, uint32_t global_index,
                    int i) override {
    std::byte* dst = slots_[i].data();
    guard_.Clear();
    FiniteGuard* guard = input.check_finite ? &guard_ : nullptr;
    uint64_t cursor = 0;
    for (const Segment& s : bucket.segments) {
      ASSIGN_OR_RETURN(SourcePlace place, PlaceOfSources(input, input.outputs[s.tensor]));
      if (place != SourcePlace::kHost) {
        return absl::FailedPreconditionError(absl::StrCat(
            "bucket ", global_index, ": tensor '", input.outputs[s.tensor].spec.name,
            "' reads GPU memory, and this transport moves host memory (use nccl)"));
      }
      // Zero the alignment padding so the checksum is deterministic.
      if (s.bucket_offset > cursor) std::memset(dst + cursor, 0, s.bucket_offset - cursor);
      RETURN_IF_ERROR(PackSegmentOnHost(input, s, global_index, dst, guard));
      cursor = s.bucket_offset + s.bytes;
    }
    EncodeBucketTrailer(BucketTrailer{.checksum = BucketChecksum(dst, bucket.bytes),
                                      .weight_version = input.weight_version,
                                      .bucket_index = global_index,
                                      .payload_bytes = bucket.bytes},
                        dst + bucket.bytes);
    return NonFiniteStatus(guard_, input, global_index);
  }

 private:
  std::vector<std::byte> slots_[2];
  std::vector<std::byte> scratch_;
  FiniteGuard guard_;
};

}  // namespace

std::unique_ptr<BucketPacker> NewHostBucketPacker() {
  return std::make_unique<HostBucketPacker>();
}

absl::Status PackSegmentOnHost(const PackInput& input, const Segment& s, uint32_t global_index,
                               std::byte* bucket_base, FiniteGuard* guard) {
  absl::Status st = PackOutputRange(input.outputs[s.tensor], input.sources, s.tensor_offset,
                                    s.bytes, bucket_base + s.bucket_offset, guard);
  if (st.ok()) return st;
  return absl::Status(st.code(), absl::StrCat("packing bucket ", global_index, ": ", st.message()));
}

absl::Status NonFiniteStatus(const FiniteGuard& guard, const PackInput& input,
                             uint32_t global_index) {
  absl::Status st = guard.Report(input.sources);
  if (st.ok()) return st;
  return WithMessagePrefix(st, absl::StrCat("bucket ", global_index, ": "));
}

absl::StatusOr<SourcePlace> PlaceOfSources(const PackInput& input, const OutputTensor& out) {
  bool host = false;
  bool device = false;
  for (const Piece& p : out.pieces) {
    (input.SourceOnDevice(p.source) ? device : host) = true;
  }
  if (host && device) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", out.spec.name,
        "' is assembled from sources in both host and GPU memory; register its parts the same way"));
  }
  return device ? SourcePlace::kDevice : SourcePlace::kHost;
}

}  // namespace weightcast
