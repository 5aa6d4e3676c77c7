// Block FP8 kernels: the quantization (its thread code and its equality
// with the CPU reference are kernels/fp8_kernel.h's) and the decode.
#include "kernels/fp8_cuda.h"

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstring>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/fp8_kernel.h"
#include "kernels/grid_stride.h"

namespace weightcast {
namespace {

// Each block takes units (128x128 blocks of any quantization of the batch)
// in grid-stride order; a unit's work, thread by thread, is
// kernels/fp8_kernel.h's, with the block's amax reduced in between.
__global__ void __launch_bounds__(kFp8Threads, 2)
    Fp8QuantizeKernel(const Fp8QuantizeParams* __restrict__ params,
                      const uint64_t* __restrict__ unit_end, uint32_t n, uint64_t total_units) {
  __shared__ float warp_amax[kFp8Warps];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (uint64_t unit = blockIdx.x; unit < total_units; unit += gridDim.x) {
    const uint32_t i = IndexOfRun(unit_end, n, unit);
    const Fp8QuantizeParams& p = params[i];
    const Fp8Unit u = Fp8UnitOf(p, unit - (i == 0 ? 0 : unit_end[i - 1]));
    float v[kFp8RowsPerThread][kFp8ColsPerLane];
    float amax = Fp8LoadThread(p, u, threadIdx.x, v);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) {
      amax = MaxPropagatingNaN(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    }
    if (lane == 0) warp_amax[warp] = amax;
    __syncthreads();
    amax = warp_amax[0];
#pragma unroll
    for (unsigned w = 1; w < kFp8Warps; ++w) amax = MaxPropagatingNaN(amax, warp_amax[w]);
    __syncthreads();  // the next unit rewrites warp_amax
    Fp8StoreThread(p, u, threadIdx.x, v, Fp8BlockScale(amax, p.scale_rule, p.power_of_two));
  }
}

__global__ void Fp8DequantizeKernel(const uint8_t* __restrict__ q, const float* __restrict__ scales,
                                    uint64_t batch, uint64_t rows, uint64_t cols,
                                    float* __restrict__ out) {
  const uint64_t total = batch * rows * cols;
  const uint64_t rb = (rows + kFp8Side - 1) / kFp8Side, cb = (cols + kFp8Side - 1) / kFp8Side;
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const uint64_t b = i / (rows * cols), r = (i / cols) % rows, c = i % cols;
    const float s = scales[(b * rb + r / kFp8Side) * cb + c / kFp8Side];
    const __half_raw h = __nv_cvt_fp8_to_halfraw(q[i], __NV_E4M3);
    out[i] = __half2float(__half(h)) * s;
  }
}

}  // namespace

cudaError_t LaunchFp8Quantize(const Fp8QuantizeParams* params, size_t n, void* scratch,
                              cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (params == nullptr || scratch == nullptr || n > 0xFFFFFFFFu) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(scratch) % 8 != 0) return cudaErrorInvalidValue;
  // One host staging buffer: the parameters, then running unit counts.
  std::vector<uint8_t> staging(Fp8QuantizeScratchBytes(n));
  auto* unit_end = reinterpret_cast<uint64_t*>(staging.data() + n * sizeof(Fp8QuantizeParams));
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    Fp8Bands span;
    if (const cudaError_t err = Fp8BandsOf(params[i], &span); err != cudaSuccess) return err;
    total += Fp8UnitsOf(params[i], span);
    unit_end[i] = total;
  }
  if (total == 0) return cudaSuccess;
  std::memcpy(staging.data(), params, n * sizeof(Fp8QuantizeParams));
  WC_CUDA_RETURN(cudaMemcpyAsync(scratch, staging.data(), staging.size(), cudaMemcpyHostToDevice,
                                 stream));
  unsigned grid = 0;
  WC_CUDA_RETURN(GridStrideBlocks(total, 16, &grid));
  Fp8QuantizeKernel<<<grid, kFp8Threads, 0, stream>>>(
      static_cast<const Fp8QuantizeParams*>(scratch),
      reinterpret_cast<const uint64_t*>(static_cast<uint8_t*>(scratch) +
                                        n * sizeof(Fp8QuantizeParams)),
      static_cast<uint32_t>(n), total);
  return cudaGetLastError();
}

cudaError_t LaunchFp8Dequantize(const uint8_t* q, const float* scales, uint64_t batch,
                                uint64_t rows, uint64_t cols, float* out, cudaStream_t stream) {
  const uint64_t total = batch * rows * cols;
  if (total == 0) return cudaSuccess;
  if (q == nullptr || scales == nullptr || out == nullptr) return cudaErrorInvalidValue;
  const uint64_t blocks = (total + 255) / 256;
  Fp8DequantizeKernel<<<static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8), 256, 0,
                        stream>>>(q, scales, batch, rows, cols, out);
  return cudaGetLastError();
}

}  // namespace weightcast
