// The e4m3fn encode the FP8 kernel uses, as one __host__ __device__
// function, so its semantics are checked against the CPU reference
// (kernels/fp8_reference.h) on a machine without a GPU.
//
// On sm_89+ __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3) is the
// hardware cvt.rn.satfinite.e4m3x2.f32 (round to nearest even, +-inf and
// out-of-range to +-448, sign of zero kept); on the host and older targets
// cuda_fp8.hpp emulates it by one rounding of the exactly widened double.
// The one difference from the reference: every NaN becomes 0x7F, while the
// reference keeps the sign (0xFF for a negative NaN), so NaN is encoded here.
#ifndef WEIGHTCAST_KERNELS_E4M3_ENCODE_H_
#define WEIGHTCAST_KERNELS_E4M3_ENCODE_H_

#include <cuda_fp8.h>

#include <cstdint>
#include <cstring>

#include "kernels/host_device.h"

namespace weightcast {

WC_HOST_DEVICE WC_FORCE_INLINE uint8_t EncodeE4M3Satfinite(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint8_t>(0x7F | ((u >> 24) & 0x80));
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}

// The code of `x` in a block of scale `scale`: x / scale encoded, but a NaN
// quotient (x NaN, inf / inf, x / NaN) is 0x7F with the sign of `x` itself.
// (A GPU's division returns the canonical +NaN, an x86 CPU's a negative one,
// so the sign must not be read after it; kernels/fp8_reference.h.)
WC_HOST_DEVICE WC_FORCE_INLINE uint8_t EncodeE4M3Scaled(float x, float scale) {
  uint32_t u;
  memcpy(&u, &x, 4);
  const uint8_t nan = static_cast<uint8_t>(0x7F | ((u >> 24) & 0x80));
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return nan;
  const float q = x / scale;
  if (q != q) return nan;
  return EncodeE4M3Satfinite(q);
}

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_E4M3_ENCODE_H_
