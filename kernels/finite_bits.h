// The non-finite guard's arithmetic, as __host__ __device__ functions, so the
// CPU packer (kernels/finite_guard.h), the copy-table kernel
// (kernels/pack_cuda.h) and the FP8 kernel (kernels/fp8_cuda.h) find the same
// elements and record them the same way, bit for bit.
//
// A floating-point element is non-finite when every bit of its exponent
// field is set (for e4m3fn, which has no infinity: exponent and mantissa, the
// NaN codes 0x7F / 0xFF). WordHasNonFinite tests the lanes of one 64-bit
// word at once, so the guard costs a few integer operations per 8 bytes
// copied: y = (w & mask) ^ mask is zero in a lane exactly when the lane is
// non-finite, and y + (high - 1) sets the lane's top bit exactly when y is
// non-zero there (y <= mask < high, so nothing carries into the next lane).
//
// A finding is one 64-bit word, (element index << 2) | FiniteClass, so the
// lowest index wins an unsigned minimum (atomicMin on the GPU), with its class
// riding along; kNoFinding (all ones) is the minimum's identity.
#ifndef WEIGHTCAST_KERNELS_FINITE_BITS_H_
#define WEIGHTCAST_KERNELS_FINITE_BITS_H_

#include <cstdint>
#include <cstring>

#include "kernels/host_device.h"

namespace weightcast {

// Element types the guard checks; values are common/dtype.h's DType (0: an
// integer or unknown type, not checked). Kept apart from DType so nvcc never
// sees absl; kernels/finite_guard.cc asserts that the values agree.
enum class GuardType : uint32_t {
  kNone = 0,
  kF16 = 7,
  kBF16 = 8,
  kF32 = 9,
  kF64 = 10,
  kF8E4M3 = 11,
  kF8E5M2 = 12,
};

enum class FiniteClass : uint32_t { kFinite = 0, kNaN = 1, kPosInf = 2, kNegInf = 3 };

inline constexpr uint64_t kNoFinding = ~uint64_t{0};

// The lane constants of one element type, replicated over a 64-bit word.
struct NonFiniteLanes {
  uint64_t mask = 0;      // exponent field (e4m3fn: exponent and mantissa)
  uint64_t mantissa = 0;  // mantissa field (zero for e4m3fn: every match is NaN)
  uint64_t high = 0;      // top (sign) bit of each lane
  uint32_t bytes = 0;     // element size; 0 for kNone
};

WC_HOST_DEVICE WC_FORCE_INLINE uint64_t ReplicateLane(uint64_t lane, uint32_t bytes) {
  uint64_t w = 0;
  for (uint32_t at = 0; at < 8; at += bytes) w |= lane << (8 * at);
  return w;
}

WC_HOST_DEVICE WC_FORCE_INLINE NonFiniteLanes LanesOf(GuardType t) {
  uint64_t mask = 0, mantissa = 0;
  uint32_t bytes = 0;
  switch (t) {
    case GuardType::kF16: mask = 0x7C00, mantissa = 0x03FF, bytes = 2; break;
    case GuardType::kBF16: mask = 0x7F80, mantissa = 0x007F, bytes = 2; break;
    case GuardType::kF32: mask = 0x7F800000u, mantissa = 0x007FFFFFu, bytes = 4; break;
    case GuardType::kF64:
      mask = 0x7FF0000000000000ull, mantissa = 0x000FFFFFFFFFFFFFull, bytes = 8;
      break;
    case GuardType::kF8E4M3: mask = 0x7F, mantissa = 0, bytes = 1; break;
    case GuardType::kF8E5M2: mask = 0x7C, mantissa = 0x03, bytes = 1; break;
    default: return NonFiniteLanes{};
  }
  const uint64_t high = uint64_t{1} << (8 * bytes - 1);
  return NonFiniteLanes{.mask = ReplicateLane(mask, bytes),
                        .mantissa = ReplicateLane(mantissa, bytes),
                        .high = ReplicateLane(high, bytes),
                        .bytes = bytes};
}

// True when some whole lane of `w` (lanes at multiples of l.bytes, little
// endian) is non-finite.
WC_HOST_DEVICE WC_FORCE_INLINE bool WordHasNonFinite(uint64_t w, const NonFiniteLanes& l) {
  const uint64_t y = (w & l.mask) ^ l.mask;
  return ((y + (l.high - (l.high >> (8 * l.bytes - 1)))) & l.high) != l.high;
}

// The class of one element given as its l.bytes bytes, zero-extended.
WC_HOST_DEVICE WC_FORCE_INLINE FiniteClass ClassifyElement(uint64_t bits,
                                                          const NonFiniteLanes& l) {
  const uint64_t lane = l.bytes == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * l.bytes)) - 1;
  const uint64_t mask = l.mask & lane, mantissa = l.mantissa & lane, high = l.high & lane;
  if ((bits & mask) != mask) return FiniteClass::kFinite;
  if (mantissa == 0 || (bits & mantissa) != 0) return FiniteClass::kNaN;
  return (bits & high) != 0 ? FiniteClass::kNegInf : FiniteClass::kPosInf;
}

// Reads element `p` (l.bytes bytes, any alignment) zero-extended.
WC_HOST_DEVICE WC_FORCE_INLINE uint64_t LoadElementBits(const void* p, uint32_t bytes) {
  uint64_t bits = 0;
  memcpy(&bits, p, bytes);  // little endian: the element's low bytes first
  return bits;
}

// Lowers a guard word to `finding` if that is smaller: atomicMin on the GPU;
// on the host (the kernels' thread code run one thread at a time,
// kernels/copy_kernel_host.h, kernels/fp8_kernel_host.h) a plain minimum.
WC_HOST_DEVICE WC_FORCE_INLINE void LowerGuardWord(unsigned long long* word,
                                                    unsigned long long finding) {
#ifdef __CUDA_ARCH__
  atomicMin(word, finding);
#else
  if (finding < *word) *word = finding;
#endif
}

WC_HOST_DEVICE WC_FORCE_INLINE uint64_t EncodeFinding(uint64_t index, FiniteClass c) {
  return (index << 2) | static_cast<uint64_t>(c);
}
WC_HOST_DEVICE WC_FORCE_INLINE uint64_t FindingIndex(uint64_t finding) { return finding >> 2; }
WC_HOST_DEVICE WC_FORCE_INLINE FiniteClass FindingClass(uint64_t finding) {
  return static_cast<FiniteClass>(finding & 3);
}

// The class of an fp32 value (what the FP8 kernel holds after widening its
// bf16/f16/f32 input, which keeps inf and NaN).
WC_HOST_DEVICE WC_FORCE_INLINE FiniteClass ClassifyFloat(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return ClassifyElement(u, LanesOf(GuardType::kF32));
}

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_FINITE_BITS_H_
