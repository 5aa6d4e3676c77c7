// GPU execution of a copy table (kernels/copy_table.h): packing a bucket
// from many device tensors, or unpacking a received bucket into many
// destinations, in one kernel launch.
#ifndef WEIGHTCAST_KERNELS_PACK_CUDA_H_
#define WEIGHTCAST_KERNELS_PACK_CUDA_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/copy_table.h"

namespace weightcast {

// Device scratch bytes LaunchCopyTable needs for a table of `n` entries.
[[nodiscard]] inline size_t CopyTableScratchBytes(size_t n) {
  return n * (sizeof(CopyEntry) + sizeof(uint64_t));
}

// Uploads the host table `entries[0..n)` into `scratch` (device memory of
// CopyTableScratchBytes(n) bytes, 8-byte aligned) and enqueues one kernel
// executing it on `stream`. The host array may be reused when this returns;
// `scratch` and every address in the table must stay valid until the stream
// passes the kernel. Rows are moved with 16-byte accesses where source and
// destination share their alignment mod 16 (8/4/2/1 bytes otherwise);
// transposed entries go through 32x32 shared-memory tiles.
// Returns cudaErrorInvalidValue (before enqueuing anything) for a null
// scratch, an element size other than 1/2/4/8, or a null address in a
// non-empty entry; else the first CUDA error.
[[nodiscard]] cudaError_t LaunchCopyTable(const CopyEntry* entries, size_t n, void* scratch,
                                          cudaStream_t stream);

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_PACK_CUDA_H_
