// The grid of a grid-stride kernel (the copy table's, FP8's): enough blocks
// to fill the current device, `per_sm` to a multiprocessor, and never more
// than there are work items. For the launchers in kernels/*.cu.
#ifndef WEIGHTCAST_KERNELS_GRID_STRIDE_H_
#define WEIGHTCAST_KERNELS_GRID_STRIDE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace weightcast {

inline cudaError_t GridStrideBlocks(uint64_t items, uint64_t per_sm, unsigned* blocks) {
  int device = 0, sms = 0;
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  if (const cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
      e != cudaSuccess) {
    return e;
  }
  const uint64_t cap = static_cast<uint64_t>(sms) * per_sm;
  *blocks = static_cast<unsigned>(items < cap ? items : cap);
  return cudaSuccess;
}

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_GRID_STRIDE_H_
