// Block FP8 (e4m3fn, 128x128 blocks), the CPU reference: the CPU path of the
// update pipeline and the oracle the GPU kernel is compared with bit for bit.
//
// Encoding of one value x (EncodeE4M3):
//   NaN        -> 0x7F with x's sign bit (0xFF for negative NaN)
//   otherwise  clamp to [-448, 448] (saturating; +-inf -> +-448), then round
//              to the nearest e4m3fn value, ties to even:
//              |x| <  2^-6 : subnormal, code = rne(|x| * 2^9)          (0..8)
//              |x| >= 2^-6 : e = floor(log2|x|), m = rne(|x| * 2^(3-e)) in [8,16],
//                            m == 16 -> e + 1, m = 8;
//                            code = ((e + 7) << 3) | (m - 8)
//              sign bit 0x80 from x (so -0.0 -> 0x80).
//              (Implemented on the float's bits: rne of the 20 dropped
//              mantissa bits; the result is the same.)
// This equals ml_dtypes' float8_e4m3fn cast of the clamped value.
//
// Block scale (Fp8BlockScale) from the block's amax (max |x| in fp32; a NaN
// anywhere in the block makes it NaN, as torch's amax does):
//   kAmaxClamp:  scale = max(amax, 1e-4) / 448
//   kScaleClamp: scale = max(amax / 448, 1e-12)
//   power_of_two: scale = 2^ceil(log2(scale)), exactly
// Quantized value: EncodeE4M3(x / scale) (a true division, not a reciprocal
// multiply). Dequantized: DecodeE4M3(q) * scale.
//
// Non-finite input (only packed when the sender's allow_non_finite is on;
// by default the version is refused, kernels/finite_guard.h), as the
// reference quantizer (torch: amax, clamp, x / scale, cast) gives it:
//   a block holding +-inf and no NaN: amax = inf, scale = +inf; a finite x
//     gives x / inf = +-0 (0x00 / 0x80), +-inf gives inf / inf = NaN;
//   a block holding a NaN: amax = NaN, scale = NaN (0x7FC00000), every code
//     NaN (x / NaN).
// A NaN quotient is coded 0x7F with the sign of x (0xFF for a negative x):
// the sign of the NaN a division makes is the hardware's (x86: negative,
// CUDA: positive), so the reference leaves it open and this fixes it.
#ifndef WEIGHTCAST_KERNELS_FP8_REFERENCE_H_
#define WEIGHTCAST_KERNELS_FP8_REFERENCE_H_

#include <cstdint>
#include <span>

#include "common/dtype.h"
#include "common/output_tensor.h"

namespace weightcast {

inline constexpr float kE4M3Max = 448.0f;

[[nodiscard]] uint8_t EncodeE4M3(float x);
[[nodiscard]] float DecodeE4M3(uint8_t code);
[[nodiscard]] float Fp8BlockScale(float amax, const Fp8Options& options);

// Element conversions to fp32 (exact): bf16, f16, f32 bit patterns.
[[nodiscard]] float Bf16ToFloat(uint16_t bits);
[[nodiscard]] float F16ToFloat(uint16_t bits);
// Reads element i of a raw buffer of a quantizable dtype as fp32.
[[nodiscard]] float LoadAsFloat(DType dtype, const std::byte* base, uint64_t i);

// Quantizes rows [row_begin, row_end) of one [rows, cols] matrix given as
// fp32 values of exactly those rows (row-major, `values` starts at
// row_begin). row_begin must be a multiple of 128. Writes the fp8 codes of
// those rows to `q` (may be null) and the scales of the 128-row bands they
// span to `scales` ([bands, ceil(cols/128)] row-major; may be null).
void QuantizeRows(const float* values, uint64_t row_begin, uint64_t row_end, uint64_t cols,
                  const Fp8Options& options, uint8_t* q, float* scales);

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_FP8_REFERENCE_H_
