// Host entry point for the GPU bucket checksum (see checksum_cuda.h).
#ifndef WEIGHTCAST_KERNELS_CHECKSUM_GPU_H_
#define WEIGHTCAST_KERNELS_CHECKSUM_GPU_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"

namespace weightcast {

// BucketChecksum of the device buffer [data, data + len), equal bit for bit
// to common/checksum.h's BucketChecksum of the same bytes. `digest_scratch`
// is device memory for NumChecksumChunks(len) uint64 values (may be null
// when len == 0). Enqueues on `stream` and waits for it, for any len, 0
// included (the digests are combined on the host). INTERNAL on CUDA errors.
[[nodiscard]] absl::StatusOr<uint64_t> DeviceBucketChecksum(const void* data, size_t len,
                                                            uint64_t* digest_scratch,
                                                            cudaStream_t stream);

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_CHECKSUM_GPU_H_
