// BucketChecksum (common/checksum.h) of a device buffer, computed on the GPU
// so receivers verify what arrived without copying it to the host.
//
// The chunk digests (XXH3-64 of each 4096-byte chunk, seeded with its index)
// are computed by a kernel, one thread per chunk; the combine step hashes the
// small digest array on the host with CombineDigests, the same function the
// CPU path uses, so the two cannot drift apart.
#ifndef WEIGHTCAST_KERNELS_CHECKSUM_CUDA_H_
#define WEIGHTCAST_KERNELS_CHECKSUM_CUDA_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace weightcast {

// Number of 4096-byte checksum chunks of a `len`-byte buffer.
[[nodiscard]] inline size_t NumChecksumChunks(size_t len) { return (len + 4095) / 4096; }

// Enqueues the kernel writing digests[i] = XXH3_64bits_withSeed(chunk i, len_i, i)
// for every chunk of the device buffer `data` (`len` bytes) into the device
// array `digests` (NumChecksumChunks(len) entries). Any alignment of `data`
// works; 8-byte aligned is faster. Returns cudaErrorInvalidValue on null
// pointers with len > 0, else the launch error. Nothing is enqueued for len 0.
[[nodiscard]] cudaError_t LaunchChunkDigests(const void* data, size_t len, uint64_t* digests,
                                             cudaStream_t stream);

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_CHECKSUM_CUDA_H_
