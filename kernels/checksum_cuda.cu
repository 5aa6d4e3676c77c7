#include "kernels/checksum_cuda.h"

#include "kernels/cuda_check.h"
#include "kernels/xxh3_device.h"

namespace weightcast {
namespace {

constexpr size_t kChunk = 4096;
constexpr int kThreads = 128;

__global__ void ChunkDigestsKernel(const uint8_t* __restrict__ data, size_t len,
                                   size_t num_chunks, uint64_t* __restrict__ digests) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < num_chunks;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t off = i * kChunk;
    const size_t n = len - off < kChunk ? len - off : kChunk;
    digests[i] = xxh3::Hash64WithSeed(data + off, n, i);
  }
}

}  // namespace

cudaError_t LaunchChunkDigests(const void* data, size_t len, uint64_t* digests,
                               cudaStream_t stream) {
  if (len == 0) return cudaSuccess;
  if (data == nullptr || digests == nullptr) return cudaErrorInvalidValue;
  const size_t chunks = NumChecksumChunks(len);
  const size_t blocks = (chunks + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
  ChunkDigestsKernel<<<grid, kThreads, 0, stream>>>(static_cast<const uint8_t*>(data), len,
                                                    chunks, digests);
  return cudaGetLastError();
}

}  // namespace weightcast
