// BucketLanding: where a receiver's buckets arrive and are verified.
//
// Two slots in the transport's memory: bucket g lands in slot g % 2 and is
// verified (trailer fields and checksum) and handed on while bucket g + 1
// lands in the other. HostBucketLanding checks in host memory (gloo);
// CudaBucketLanding (receiver/cuda_bucket_landing.h) computes the checksum
// on the GPU, so nothing is copied to the host to be verified, and copies
// the payload to pinned host memory only for sinks that want host bytes.
//
// Threading: Verify runs on the receiver's consumer thread for one slot
// while the transport writes the other.
#ifndef WEIGHTCAST_RECEIVER_BUCKET_LANDING_H_
#define WEIGHTCAST_RECEIVER_BUCKET_LANDING_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "protocol/wire_format.h"

namespace weightcast {

class BucketLanding {
 public:
  virtual ~BucketLanding() = default;

  // True when the slots are device memory.
  [[nodiscard]] virtual bool device() const = 0;

  // Makes both slots hold at least `bytes` (payload + trailer).
  [[nodiscard]] virtual absl::Status Reserve(size_t bytes) = 0;
  [[nodiscard]] virtual std::byte* slot(int i) = 0;

  // Checks bucket `g` of `weight_version` in slot i: its trailer names it and
  // its checksum matches. Returns the payload: in host memory, or, with
  // `device_payload` on a device landing, the slot itself. DATA_LOSS naming
  // the bucket and its sender on any mismatch.
  [[nodiscard]] virtual absl::StatusOr<const std::byte*> Verify(int i, const GlobalBucket& bucket,
                                                                uint32_t g,
                                                                uint64_t weight_version,
                                                                bool device_payload) = 0;

  // Test hook: flips the low bit of byte `offset` of slot i, as a transfer
  // error would.
  [[nodiscard]] virtual absl::Status FlipBit(int i, size_t offset) = 0;
};

[[nodiscard]] std::unique_ptr<BucketLanding> NewHostBucketLanding();

// The checks both landings share: the trailer's fields against the manifest
// and the computed checksum against the trailer's.
[[nodiscard]] absl::Status CheckBucket(const GlobalBucket& bucket, uint32_t g,
                                       uint64_t weight_version, const std::byte* trailer_bytes,
                                       uint64_t checksum);

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_BUCKET_LANDING_H_
