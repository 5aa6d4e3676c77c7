// Conversions of 16-bit float bit patterns to float, and the few float
// helpers of block FP8, as one __host__ __device__ function each, so the FP8
// kernel and its CPU twin load inputs and treat NaN the same way, bit for bit. Unlike __half2float, a NaN keeps its sign (and
// payload): the FP8 encode writes the sign of a NaN (0xFF for -NaN).
#ifndef WEIGHTCAST_KERNELS_FLOAT_BITS_H_
#define WEIGHTCAST_KERNELS_FLOAT_BITS_H_

#include <cstdint>
#include <cstring>

#include "kernels/host_device.h"

namespace weightcast {

WC_HOST_DEVICE WC_FORCE_INLINE float Bf16BitsToFloat(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

WC_HOST_DEVICE WC_FORCE_INLINE float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    // Zero or subnormal: mant x 2^-24, exact in float.
    const float f = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return sign ? -f : f;
  }
  const uint32_t u = exp == 0x1Fu ? sign | 0x7F800000u | (mant << 13)         // inf / NaN
                                  : sign | ((exp + 112u) << 23) | (mant << 13);
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// The canonical quiet NaN, 0x7FC00000: the block scale of a block holding a
// NaN, written with the same bits by the CPU and the GPU.
WC_HOST_DEVICE WC_FORCE_INLINE float CanonicalNaN() {
  const uint32_t u = 0x7FC00000u;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// max(a, b) that returns NaN when either is NaN (torch's amax), unlike
// fmaxf, which drops it: a block amax with a NaN in the block is NaN.
WC_HOST_DEVICE WC_FORCE_INLINE float MaxPropagatingNaN(float a, float b) {
  return (a != a || a > b) ? a : b;
}

// Not inf or NaN (the exponent field is not all ones), the same test for
// nvcc and g++ (whose isfinite live in different namespaces).
WC_HOST_DEVICE WC_FORCE_INLINE bool IsFiniteFloat(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return (u & 0x7F800000u) != 0x7F800000u;
}

// 0x80 when the sign bit of x is set (also for a NaN), else 0.
WC_HOST_DEVICE WC_FORCE_INLINE uint8_t SignByte(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return static_cast<uint8_t>((u >> 24) & 0x80);
}

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_FLOAT_BITS_H_
