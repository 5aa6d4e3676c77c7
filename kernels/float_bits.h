// Conversions of 16-bit float bit patterns to float, as one __host__
// __device__ function each, so the FP8 kernel and its CPU twin load inputs
// the same way, bit for bit. Unlike __half2float, a NaN keeps its sign (and
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

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_FLOAT_BITS_H_
