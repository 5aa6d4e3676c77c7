#include "receiver/bucket_landing.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/checksum.h"

namespace weightcast {
namespace {

class HostBucketLanding final : public BucketLanding {
 public:
  bool device() const override { return false; }
  absl::Status Reserve(size_t bytes) override {
    for (auto& s : slots_) {
      if (s.size() < bytes) s.resize(bytes);
    }
    return absl::OkStatus();
  }
  std::byte* slot(int i) override { return slots_[i].data(); }

  absl::StatusOr<const std::byte*> Verify(int i, const GlobalBucket& b, uint32_t g,
                                          uint64_t weight_version, bool) override {
    const std::byte* data = slots_[i].data();
    absl::Status s = CheckBucket(b, g, weight_version, data + b.bytes, BucketChecksum(data, b.bytes));
    if (!s.ok()) return s;
    return data;
  }

  absl::Status FlipBit(int i, size_t offset) override {
    slots_[i][offset] ^= std::byte{0x01};
    return absl::OkStatus();
  }

 private:
  std::vector<std::byte> slots_[2];
};

}  // namespace

std::unique_ptr<BucketLanding> NewHostBucketLanding() {
  return std::make_unique<HostBucketLanding>();
}

absl::Status CheckBucket(const GlobalBucket& b, uint32_t g, uint64_t weight_version,
                         const std::byte* trailer_bytes, uint64_t checksum) {
  absl::StatusOr<BucketTrailer> trailer = DecodeBucketTrailer(trailer_bytes);
  if (!trailer.ok()) {
    return absl::DataLossError(absl::StrCat("bucket ", g, " from sender ", b.root, ": ",
                                            trailer.status().message()));
  }
  if (trailer->bucket_index != g || trailer->weight_version != weight_version ||
      trailer->payload_bytes != b.bytes) {
    return absl::DataLossError(absl::StrCat(
        "bucket ", g, " from sender ", b.root, ": trailer says bucket ", trailer->bucket_index,
        " of version ", trailer->weight_version, " with ", trailer->payload_bytes, " bytes"));
  }
  if (checksum != trailer->checksum) {
    return absl::DataLossError(absl::StrCat("bucket ", g, " from sender ", b.root,
                                            ": checksum mismatch (", b.bytes, " bytes)"));
  }
  return absl::OkStatus();
}

}  // namespace weightcast
