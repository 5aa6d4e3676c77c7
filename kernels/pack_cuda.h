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
// `guard` (device, optional): the non-finite guard words the entries'
// guard_slot index (kernels/copy_table.h), each set to kNoFinding by the
// caller; entries with a guard_type are checked in registers as they are
// copied and lower their word with atomicMin. Null: nothing is checked.
// Returns cudaErrorInvalidValue (before enqueuing anything) for a null
// scratch, an element size other than 1/2/4/8, a null address in a
// non-empty entry, or a guarded entry whose element size is not its type's;
// else the first CUDA error.
[[nodiscard]] cudaError_t LaunchCopyTable(const CopyEntry* entries, size_t n, void* scratch,
                                          cudaStream_t stream,
                                          unsigned long long* guard = nullptr);

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_PACK_CUDA_H_
