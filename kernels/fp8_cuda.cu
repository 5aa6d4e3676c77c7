// Block FP8 kernels. Equality with the CPU reference, element by element:
//  - input to f32: bf16/f16 widen exactly; f32 as is.
//  - amax: MaxPropagatingNaN(amax, fabsf(x)) over the block (a NaN makes it
//    NaN, like the reference); padding of partial blocks does not take part.
//  - scale: the reference's formula in IEEE f32 (nvcc's default -prec-div=true,
//    no fast math, no flush to zero); amax NaN -> CanonicalNaN(), amax inf ->
//    inf; power of two via frexpf/ldexpf (finite scales), which are exact.
//  - q = encode(x / scale) with a true IEEE division; a NaN quotient is
//    0x7F | sign of x (EncodeE4M3Scaled).
//  - encode: cvt.rn.satfinite.e4m3x2.f32 (__nv_cvt_float_to_fp8 with
//    __NV_SATFINITE, round to nearest even) for every non-NaN value; it
//    saturates +-inf and |x| >= 464 to +-448 exactly as the reference's
//    clamp-then-round does, and keeps the sign of zero. NaN is the one edge
//    where the hardware differs: cvt gives 0x7F for every NaN, the reference
//    keeps the sign bit (0xFF for negative NaN), so NaN is encoded here in
//    software (0x7F | sign). kernels/e4m3_encode.h holds that function;
//    e4m3_encode_test checks it against the reference on the host (through
//    cuda_fp8.hpp's emulation of the same cvt), kernels_gpu_test on the GPU.
#include "kernels/fp8_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cfloat>

#include "kernels/cuda_check.h"
#include "kernels/e4m3_encode.h"
#include "kernels/finite_bits.h"
#include "kernels/float_bits.h"

namespace weightcast {
namespace {

constexpr int kBlock = 128;
constexpr int kThreads = 256;                       // 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerThread = kBlock / kWarps;      // 16
constexpr int kColsPerLane = kBlock / 32;            // 4

__device__ __forceinline__ float LoadElement(const uint8_t* p, Fp8SourceType t) {
  switch (t) {
    case Fp8SourceType::kBF16:
      return Bf16BitsToFloat(*reinterpret_cast<const uint16_t*>(p));
    case Fp8SourceType::kF16:
      // Not __half2float: it drops a NaN's sign, the CPU twin keeps it.
      return HalfBitsToFloat(*reinterpret_cast<const uint16_t*>(p));
    default:
      return *reinterpret_cast<const float*>(p);
  }
}

__device__ __forceinline__ int ElementBytes(Fp8SourceType t) {
  return t == Fp8SourceType::kF32 ? 4 : 2;
}

__device__ __forceinline__ float BlockScale(float amax, int rule, bool power_of_two) {
  if (isnan(amax)) return CanonicalNaN();
  float scale = rule == 0 ? fmaxf(amax, 1e-4f) / 448.0f : fmaxf(amax / 448.0f, 1e-12f);
  if (power_of_two && isfinite(scale)) {
    int k = 0;
    const float f = frexpf(scale, &k);
    scale = f == 0.5f ? scale : ldexpf(1.0f, k);
  }
  return scale;
}

// The segment holding global row g (binary search).
__device__ __forceinline__ uint32_t SegmentOf(const Fp8RowSegment* seg, uint32_t n, uint64_t g) {
  uint32_t lo = 0, hi = n - 1;
  while (lo < hi) {
    const uint32_t mid = (lo + hi + 1) / 2;
    if (seg[mid].first_row <= g) lo = mid; else hi = mid - 1;
  }
  return lo;
}

__device__ __forceinline__ const uint8_t* RowAddress(const Fp8RowSegment& seg, uint64_t g) {
  return reinterpret_cast<const uint8_t*>(seg.src) + (g - seg.first_row) * seg.row_stride;
}

// grid.x = column blocks, grid.y = units (bands) in [row_begin, row_end).
__global__ void __launch_bounds__(kThreads, 2) Fp8QuantizeKernel(Fp8QuantizeParams p) {
  const uint64_t R = p.q_rows, C = p.q_cols;
  const uint64_t bands = (R + kBlock - 1) / kBlock;
  const uint64_t first_band = (p.row_begin / R) * bands + (p.row_begin % R) / kBlock;
  const uint64_t L = first_band + blockIdx.y;  // linear band index over all matrices
  const uint64_t b = L / bands, band = L % bands;
  const uint64_t r0 = band * kBlock;
  const uint64_t nrows = R - r0 < kBlock ? R - r0 : kBlock;
  const uint64_t c0 = static_cast<uint64_t>(blockIdx.x) * kBlock;
  const uint64_t ncols = C - c0 < kBlock ? C - c0 : kBlock;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int es = ElementBytes(p.src_type);

  float v[kRowsPerThread][kColsPerLane];
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const uint64_t r = warp + i * kWarps;
    const uint32_t s = r < nrows ? SegmentOf(p.segments, p.num_segments, b * R + r0 + r) : 0;
    const uint8_t* row = r < nrows ? RowAddress(p.segments[s], b * R + r0 + r) : nullptr;
#pragma unroll
    for (int j = 0; j < kColsPerLane; ++j) {
      const uint64_t c = static_cast<uint64_t>(lane) * kColsPerLane + j;
      v[i][j] = 0.0f;
      if (row != nullptr && c < ncols) {
        const uint8_t* at = row + (c0 + c) * es;
        v[i][j] = LoadElement(at, p.src_type);
        amax = MaxPropagatingNaN(amax, fabsf(v[i][j]));
        // Widening keeps inf and NaN, so the class of the f32 is the source's.
        const FiniteClass k = p.guard != nullptr ? ClassifyFloat(v[i][j]) : FiniteClass::kFinite;
        if (k != FiniteClass::kFinite) [[unlikely]] {
          const Fp8RowSegment& seg = p.segments[s];
          const uint64_t index = (reinterpret_cast<uint64_t>(at) - seg.guard_base) / es;
          atomicMin(p.guard + seg.guard_slot,
                    static_cast<unsigned long long>(EncodeFinding(index, k)));
        }
      }
    }
  }
  // Block amax.
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    amax = MaxPropagatingNaN(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  }
  __shared__ float warp_amax[kWarps];
  if (lane == 0) warp_amax[warp] = amax;
  __syncthreads();
  amax = warp_amax[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) amax = MaxPropagatingNaN(amax, warp_amax[w]);
  const float scale = BlockScale(amax, p.scale_rule, p.power_of_two);

  const uint64_t col_blocks = (C + kBlock - 1) / kBlock;
  if (p.dst_scales != nullptr && threadIdx.x == 0) {
    p.dst_scales[blockIdx.y * col_blocks + blockIdx.x] = scale;
  }
  if (p.dst_q == nullptr) return;
  const uint64_t out_row0 = b * R + r0 - p.row_begin;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const uint64_t r = warp + i * kWarps;
    if (r >= nrows) continue;
    uint8_t* out = p.dst_q + (out_row0 + r) * C + c0 + static_cast<uint64_t>(lane) * kColsPerLane;
    const uint64_t cbase = static_cast<uint64_t>(lane) * kColsPerLane;
    uint8_t code[kColsPerLane];
#pragma unroll
    for (int j = 0; j < kColsPerLane; ++j) code[j] = EncodeE4M3Scaled(v[i][j], scale);
    if (cbase + kColsPerLane <= ncols && (reinterpret_cast<uintptr_t>(out) & 3) == 0) {
      *reinterpret_cast<uint32_t*>(out) = static_cast<uint32_t>(code[0]) |
                                          (static_cast<uint32_t>(code[1]) << 8) |
                                          (static_cast<uint32_t>(code[2]) << 16) |
                                          (static_cast<uint32_t>(code[3]) << 24);
    } else {
#pragma unroll
      for (int j = 0; j < kColsPerLane; ++j) {
        if (cbase + j < ncols) out[j] = code[j];
      }
    }
  }
}

__global__ void Fp8DequantizeKernel(const uint8_t* __restrict__ q, const float* __restrict__ scales,
                                    uint64_t batch, uint64_t rows, uint64_t cols,
                                    float* __restrict__ out) {
  const uint64_t total = batch * rows * cols;
  const uint64_t rb = (rows + kBlock - 1) / kBlock, cb = (cols + kBlock - 1) / kBlock;
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const uint64_t b = i / (rows * cols), r = (i / cols) % rows, c = i % cols;
    const float s = scales[(b * rb + r / kBlock) * cb + c / kBlock];
    const __half_raw h = __nv_cvt_fp8_to_halfraw(q[i], __NV_E4M3);
    out[i] = __half2float(__half(h)) * s;
  }
}

}  // namespace

cudaError_t LaunchFp8Quantize(const Fp8QuantizeParams& p, cudaStream_t stream) {
  Fp8Bands span;
  if (const cudaError_t err = Fp8BandsOf(p, &span); err != cudaSuccess || span.count == 0) {
    return err;
  }
  const uint64_t R = p.q_rows;
  const uint64_t bands = (R + kBlock - 1) / kBlock;
  const uint64_t first = span.first, units = span.count;
  const uint64_t col_blocks = (p.q_cols + kBlock - 1) / kBlock;
  // grid.y holds at most 65535 bands: more (a large batch of experts) go in
  // several launches, each over whole bands, its outputs offset to match.
  constexpr uint64_t kMaxGridY = 65535;
  const auto band_row = [&](uint64_t linear) {
    return (linear / bands) * R + (linear % bands) * kBlock;
  };
  for (uint64_t u0 = 0; u0 < units; u0 += kMaxGridY) {
    const uint64_t n = units - u0 < kMaxGridY ? units - u0 : kMaxGridY;
    Fp8QuantizeParams q = p;
    q.row_begin = u0 == 0 ? p.row_begin : band_row(first + u0);
    q.row_end = u0 + n == units ? p.row_end : band_row(first + u0 + n);
    if (q.dst_q != nullptr) q.dst_q += (q.row_begin - p.row_begin) * p.q_cols;
    if (q.dst_scales != nullptr) q.dst_scales += u0 * col_blocks;
    Fp8QuantizeKernel<<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(n)),
                        kThreads, 0, stream>>>(q);
    if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  }
  return cudaSuccess;
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
