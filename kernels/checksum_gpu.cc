#include "kernels/checksum_gpu.h"

#include <vector>

#include "common/checksum.h"
#include "kernels/checksum_cuda.h"
#include "kernels/cuda_check.h"

namespace weightcast {

absl::StatusOr<uint64_t> DeviceBucketChecksum(const void* data, size_t len,
                                              uint64_t* digest_scratch, cudaStream_t stream) {
  if (len == 0) {
    // Still waits for the stream: callers count on the checksum's return to
    // mean everything enqueued before it (the bucket's copies) has finished.
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream));
    return BucketChecksum(nullptr, 0);
  }
  if (data == nullptr || digest_scratch == nullptr) {
    return absl::InvalidArgumentError("DeviceBucketChecksum: null buffer");
  }
  const size_t n = NumChecksumChunks(len);
  RETURN_IF_CUDA_ERROR(LaunchChunkDigests(data, len, digest_scratch, stream), len, " bytes");
  std::vector<uint64_t> digests(n);
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(digests.data(), digest_scratch, n * sizeof(uint64_t),
                                       cudaMemcpyDeviceToHost, stream));
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream));
  return CombineDigests(digests.data(), n, len);
}

}  // namespace weightcast
