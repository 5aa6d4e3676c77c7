// The GPU BucketLanding (receiver/bucket_landing.h) for device transports:
// slots in device memory, checksums computed on the GPU (only the chunk
// digests and the 32-byte trailer come to the host), and a pinned host
// twin of each slot for sinks that take host bytes (a checkpoint writer).
// Device memory: two slots of the largest bucket plus the digest scratch.
#ifndef WEIGHTCAST_RECEIVER_CUDA_BUCKET_LANDING_H_
#define WEIGHTCAST_RECEIVER_CUDA_BUCKET_LANDING_H_

#include <memory>

#include "absl/status/statusor.h"
#include "receiver/bucket_landing.h"

namespace weightcast {

// FAILED_PRECONDITION when there is no CUDA device; INTERNAL on CUDA errors.
[[nodiscard]] absl::StatusOr<std::unique_ptr<BucketLanding>> NewCudaBucketLanding(int device);

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_CUDA_BUCKET_LANDING_H_
