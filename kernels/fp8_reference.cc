#include "kernels/fp8_reference.h"

#include "kernels/float_bits.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace weightcast {

uint8_t EncodeE4M3(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80);
  u &= 0x7FFFFFFFu;                            // |x|
  if (u > 0x7F800000u) return sign | 0x7F;     // NaN keeps its sign
  if (u >= 0x43E00000u) return sign | 0x7E;    // >= 448 (inf included): saturate
  if (u < 0x3C800000u) {                       // < 2^-6: subnormal, multiples of 2^-9
    float a;
    std::memcpy(&a, &u, 4);
    // a * 2^9 is exact and below 8; adding 2^23 rounds it to an integer,
    // ties to even (the default rounding mode), and subtracting is exact.
    const float m = (a * 512.0f + 8388608.0f) - 8388608.0f;
    return sign | static_cast<uint8_t>(m);     // 8 is the smallest normal, 0x08
  }
  // Normal: keep 3 of the 23 mantissa bits, rounding to nearest even on the
  // 20 dropped bits; a carry out of the mantissa bumps the exponent.
  const uint32_t lsb = (u >> 20) & 1;
  u += 0x7FFFFu + lsb;
  const uint32_t exp = (u >> 23) - 127 + 7;    // e4m3 exponent field, >= 1 here
  const uint32_t code = (exp << 3) | ((u >> 20) & 7);
  return sign | static_cast<uint8_t>(std::min<uint32_t>(code, 0x7E));  // 464 rounds to 448
}

float DecodeE4M3(uint8_t code) {
  const float sign = (code & 0x80) ? -1.0f : 1.0f;
  const int exp = (code >> 3) & 0xF;
  const int mant = code & 0x7;
  if (exp == 0xF && mant == 0x7) return std::copysign(NAN, sign);
  if (exp == 0) return sign * std::ldexp(static_cast<float>(mant), -9);
  return sign * std::ldexp(static_cast<float>(8 + mant), exp - 10);
}

float Fp8BlockScale(float amax, const Fp8Options& o) {
  if (std::isnan(amax)) return CanonicalNaN();
  // amax = inf gives scale = inf under either rule.
  float scale = o.rule == Fp8ScaleRule::kAmaxClamp ? std::max(amax, 1e-4f) / kE4M3Max
                                                   : std::max(amax / kE4M3Max, 1e-12f);
  if (o.power_of_two && std::isfinite(scale)) {
    int k = 0;
    const float f = std::frexp(scale, &k);  // scale = f * 2^k
    scale = f == 0.5f ? scale : std::ldexp(1.0f, k);
  }
  return scale;
}

float Bf16ToFloat(uint16_t bits) { return Bf16BitsToFloat(bits); }

float F16ToFloat(uint16_t h) { return HalfBitsToFloat(h); }

float LoadAsFloat(DType dtype, const std::byte* base, uint64_t i) {
  switch (dtype) {
    case DType::kBF16: {
      uint16_t b;
      std::memcpy(&b, base + 2 * i, 2);
      return Bf16ToFloat(b);
    }
    case DType::kF16: {
      uint16_t b;
      std::memcpy(&b, base + 2 * i, 2);
      return F16ToFloat(b);
    }
    case DType::kF32: {
      float f;
      std::memcpy(&f, base + 4 * i, 4);
      return f;
    }
    default:
      return NAN;
  }
}

void QuantizeRows(const float* values, uint64_t row_begin, uint64_t row_end, uint64_t cols,
                  const Fp8Options& options, uint8_t* q, float* scales) {
  const uint64_t col_blocks = (cols + kFp8Block - 1) / kFp8Block;
  for (uint64_t band = row_begin; band < row_end; band += kFp8Block) {
    const uint64_t band_end = std::min<uint64_t>(band + kFp8Block, row_end);
    const uint64_t band_index = (band - row_begin) / kFp8Block;
    for (uint64_t cb = 0; cb < col_blocks; ++cb) {
      const uint64_t c0 = cb * kFp8Block, c1 = std::min<uint64_t>(c0 + kFp8Block, cols);
      float amax = 0.0f;
      for (uint64_t r = band; r < band_end; ++r) {
        const float* row = values + (r - row_begin) * cols;
        for (uint64_t c = c0; c < c1; ++c) {
          const float a = std::fabs(row[c]);
          amax = MaxPropagatingNaN(a, amax);
        }
      }
      const float scale = Fp8BlockScale(amax, options);
      if (scales != nullptr) scales[band_index * col_blocks + cb] = scale;
      if (q == nullptr) continue;
      for (uint64_t r = band; r < band_end; ++r) {
        const float* row = values + (r - row_begin) * cols;
        uint8_t* out = q + (r - row_begin) * cols;
        for (uint64_t c = c0; c < c1; ++c) {
          const float x = row[c] / scale;
          out[c] = std::isnan(x) ? static_cast<uint8_t>(0x7F | SignByte(row[c])) : EncodeE4M3(x);
        }
      }
    }
  }
}

}  // namespace weightcast
