// The block FP8 kernel's work, thread by thread, written once for nvcc (the
// kernel in fp8_cuda.cu) and for g++ (RunFp8KernelOnHost in
// fp8_kernel_host.h, which the host twin's launcher and fp8_kernel_test
// run). A block of kFp8Threads threads quantizes one 128x128 block (an
// Fp8Unit) of one quantization of a batch: each thread loads 16 rows x 4
// columns of it into registers (Fp8LoadThread: widen, non-finite guard,
// the thread's amax), the block reduces the amax (on the GPU by shuffles
// and shared memory, on the host by a loop: a NaN-propagating maximum of
// non-negative values, the same whatever the order), and each thread
// encodes and stores its values (Fp8StoreThread). So the host run computes
// what the GPU computes, and fp8_kernel_test checks it against the CPU
// reference (kernels/fp8_reference.h) on a machine without a GPU.
//
// Equality with the reference, element by element:
//  - input to f32: bf16/f16 widen exactly (an f16 NaN keeps its sign,
//    unlike __half2float); f32 as is.
//  - amax: MaxPropagatingNaN(amax, fabsf(x)) over the block (a NaN makes it
//    NaN, like the reference); padding of partial blocks does not take part.
//  - scale: the reference's formula in IEEE f32 (nvcc's default
//    -prec-div=true, no fast math, no flush to zero); amax NaN ->
//    CanonicalNaN(), amax inf -> inf; power of two via frexpf/ldexpf
//    (finite scales), which are exact.
//  - q = EncodeE4M3Scaled(x, scale): a true IEEE division, the hardware's
//    satfinite cvt (emulated exactly on the host), a NaN as 0x7F | the sign
//    of x (kernels/e4m3_encode.h).
#ifndef WEIGHTCAST_KERNELS_FP8_KERNEL_H_
#define WEIGHTCAST_KERNELS_FP8_KERNEL_H_

#include <cmath>
#include <cstdint>

#include "kernels/e4m3_encode.h"
#include "kernels/finite_bits.h"
#include "kernels/float_bits.h"
#include "kernels/fp8_cuda.h"
#include "kernels/host_device.h"

namespace weightcast {

// The side of a quantization block (common/output_tensor.h's kFp8Block, which
// nvcc does not see).
inline constexpr uint64_t kFp8Side = 128;
inline constexpr unsigned kFp8Threads = 256;                   // 8 warps
inline constexpr unsigned kFp8Warps = kFp8Threads / 32;
inline constexpr unsigned kFp8RowsPerThread = kFp8Side / kFp8Warps;  // 16
inline constexpr unsigned kFp8ColsPerLane = kFp8Side / 32;           // 4

// One 128x128 block of one quantization: what one block of the kernel does.
struct Fp8Unit {
  uint64_t matrix = 0;      // b: the block's rows are b * q_rows + r0 ..
  uint64_t r0 = 0, nrows = 0;
  uint64_t c0 = 0, ncols = 0;
  uint64_t band = 0;        // its band among the quantization's (a scales row)
  uint64_t col_block = 0;
};

// Unit `k` of `p`: bands in order (Fp8BandsOf), column blocks within each.
WC_HOST_DEVICE WC_FORCE_INLINE Fp8Unit Fp8UnitOf(const Fp8QuantizeParams& p, uint64_t k) {
  const uint64_t R = p.q_rows, C = p.q_cols;
  const uint64_t bands = (R + kFp8Side - 1) / kFp8Side;
  const uint64_t col_blocks = (C + kFp8Side - 1) / kFp8Side;
  const uint64_t first_band = (p.row_begin / R) * bands + (p.row_begin % R) / kFp8Side;
  Fp8Unit u;
  u.band = k / col_blocks;
  u.col_block = k % col_blocks;
  const uint64_t linear = first_band + u.band;  // over all matrices
  u.matrix = linear / bands;
  u.r0 = (linear % bands) * kFp8Side;
  u.nrows = R - u.r0 < kFp8Side ? R - u.r0 : kFp8Side;
  u.c0 = u.col_block * kFp8Side;
  u.ncols = C - u.c0 < kFp8Side ? C - u.c0 : kFp8Side;
  return u;
}

// Blocks of `p`, whose bands Fp8BandsOf gave as `bands`: the bands times
// the column blocks.
inline uint64_t Fp8UnitsOf(const Fp8QuantizeParams& p, const Fp8Bands& bands) {
  return bands.count * ((p.q_cols + kFp8Side - 1) / kFp8Side);
}

// Sources are typed tensors: `p` is aligned to its element size.
WC_HOST_DEVICE WC_FORCE_INLINE float Fp8LoadElement(const uint8_t* p, Fp8SourceType t) {
  switch (t) {
    case Fp8SourceType::kBF16:
      return Bf16BitsToFloat(*reinterpret_cast<const uint16_t*>(p));
    case Fp8SourceType::kF16:
      // Not __half2float: it drops a NaN's sign, the CPU reference keeps it.
      return HalfBitsToFloat(*reinterpret_cast<const uint16_t*>(p));
    default:
      return *reinterpret_cast<const float*>(p);
  }
}

// The segment holding global row g (binary search; segments sorted, no gaps).
WC_HOST_DEVICE WC_FORCE_INLINE uint32_t Fp8SegmentOf(const Fp8RowSegment* seg, uint32_t n,
                                                     uint64_t g) {
  uint32_t lo = 0, hi = n - 1;
  while (lo < hi) {
    const uint32_t mid = (lo + hi + 1) / 2;
    if (seg[mid].first_row <= g) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Thread t's elements of unit u into v: v[i][j] is the block's row
// t / 32 + 8 i, column 4 (t % 32) + j (0 outside the block). Lowers the
// guard words for non-finite ones; returns the thread's amax.
WC_HOST_DEVICE WC_FORCE_INLINE float Fp8LoadThread(
    const Fp8QuantizeParams& p, const Fp8Unit& u, unsigned t,
    float (&v)[kFp8RowsPerThread][kFp8ColsPerLane]) {
  const unsigned warp = t / 32, lane = t % 32;
  const int es = p.src_type == Fp8SourceType::kF32 ? 4 : 2;
  float amax = 0.0f;
  WC_UNROLL
  for (unsigned i = 0; i < kFp8RowsPerThread; ++i) {
    const uint64_t r = warp + i * kFp8Warps;
    const uint64_t g = u.matrix * p.q_rows + u.r0 + r;
    const uint32_t s = r < u.nrows ? Fp8SegmentOf(p.segments, p.num_segments, g) : 0;
    const uint8_t* row =
        r < u.nrows ? reinterpret_cast<const uint8_t*>(p.segments[s].src) +
                          (g - p.segments[s].first_row) * p.segments[s].row_stride
                    : nullptr;
    WC_UNROLL
    for (unsigned j = 0; j < kFp8ColsPerLane; ++j) {
      const uint64_t c = static_cast<uint64_t>(lane) * kFp8ColsPerLane + j;
      v[i][j] = 0.0f;
      if (row != nullptr && c < u.ncols) {
        const uint8_t* at = row + (u.c0 + c) * es;
        v[i][j] = Fp8LoadElement(at, p.src_type);
        amax = MaxPropagatingNaN(amax, fabsf(v[i][j]));
        // Widening keeps inf and NaN, so the class of the f32 is the source's.
        const FiniteClass k = p.guard != nullptr ? ClassifyFloat(v[i][j]) : FiniteClass::kFinite;
        if (k != FiniteClass::kFinite) [[unlikely]] {
          const Fp8RowSegment& seg = p.segments[s];
          const uint64_t index = (reinterpret_cast<uint64_t>(at) - seg.guard_base) / es;
          LowerGuardWord(p.guard + seg.guard_slot,
                         static_cast<unsigned long long>(EncodeFinding(index, k)));
        }
      }
    }
  }
  return amax;
}

WC_HOST_DEVICE WC_FORCE_INLINE float Fp8BlockScale(float amax, int rule, bool power_of_two) {
  if (amax != amax) return CanonicalNaN();
  float scale = rule == 0 ? fmaxf(amax, 1e-4f) / 448.0f : fmaxf(amax / 448.0f, 1e-12f);
  if (power_of_two && IsFiniteFloat(scale)) {
    int k = 0;
    const float f = frexpf(scale, &k);
    scale = f == 0.5f ? scale : ldexpf(1.0f, k);
  }
  return scale;
}

// Thread t encodes and stores its values of unit u with the block's scale;
// thread 0 also stores the scale.
WC_HOST_DEVICE WC_FORCE_INLINE void Fp8StoreThread(
    const Fp8QuantizeParams& p, const Fp8Unit& u, unsigned t,
    const float (&v)[kFp8RowsPerThread][kFp8ColsPerLane], float scale) {
  const uint64_t col_blocks = (p.q_cols + kFp8Side - 1) / kFp8Side;
  if (p.dst_scales != nullptr && t == 0) p.dst_scales[u.band * col_blocks + u.col_block] = scale;
  if (p.dst_q == nullptr) return;
  const unsigned warp = t / 32, lane = t % 32;
  const uint64_t out_row0 = u.matrix * p.q_rows + u.r0 - p.row_begin;
  const uint64_t cbase = static_cast<uint64_t>(lane) * kFp8ColsPerLane;
  WC_UNROLL
  for (unsigned i = 0; i < kFp8RowsPerThread; ++i) {
    const uint64_t r = warp + i * kFp8Warps;
    if (r >= u.nrows) continue;
    uint8_t* out = p.dst_q + (out_row0 + r) * p.q_cols + u.c0 + cbase;
    uint8_t code[kFp8ColsPerLane];
    WC_UNROLL
    for (unsigned j = 0; j < kFp8ColsPerLane; ++j) code[j] = EncodeE4M3Scaled(v[i][j], scale);
    if (cbase + kFp8ColsPerLane <= u.ncols && (reinterpret_cast<uintptr_t>(out) & 3) == 0) {
      *reinterpret_cast<uint32_t*>(out) = static_cast<uint32_t>(code[0]) |
                                          (static_cast<uint32_t>(code[1]) << 8) |
                                          (static_cast<uint32_t>(code[2]) << 16) |
                                          (static_cast<uint32_t>(code[3]) << 24);
    } else {
      WC_UNROLL
      for (unsigned j = 0; j < kFp8ColsPerLane; ++j) {
        if (cbase + j < u.ncols) out[j] = code[j];
      }
    }
  }
}

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_FP8_KERNEL_H_
