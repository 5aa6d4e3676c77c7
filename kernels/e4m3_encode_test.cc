// The FP8 kernel's encode (cuda_fp8.h's conversion + the NaN rule) against
// the CPU reference EncodeE4M3, on the host: every float bit pattern at a
// stride, plus dense neighbourhoods of every rounding and range edge; and
// cuda_fp8.h's decode against DecodeE4M3 for all 256 codes.
#include "kernels/e4m3_encode.h"
#include "kernels/float_bits.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "gtest/gtest.h"
#include "kernels/fp8_reference.h"

namespace weightcast {
namespace {

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(E4M3EncodeTest, MatchesReferenceOverFloatPatterns) {
  uint64_t checked = 0;
  for (uint64_t u = 0; u <= 0xFFFFFFFFull; u += 251) {
    const float x = FromBits(static_cast<uint32_t>(u));
    ASSERT_EQ(EncodeE4M3Satfinite(x), EncodeE4M3(x)) << std::hexfloat << x << " bits 0x" << std::hex << u;
    ++checked;
  }
  EXPECT_GT(checked, 17000000u);
}

TEST(E4M3EncodeTest, MatchesReferenceAroundEveryEdge) {
  // Every e4m3 value and every midpoint between neighbours, both signs, with
  // the 4096 float patterns on either side; plus 448..480, inf, NaN, 2^-10.
  std::vector<float> centers;
  for (int code = 0; code < 0x7F; ++code) {
    const float a = DecodeE4M3(static_cast<uint8_t>(code));
    const float b = code + 1 < 0x7F ? DecodeE4M3(static_cast<uint8_t>(code + 1)) : 480.0f;
    centers.push_back(a);
    centers.push_back((a + b) / 2);
  }
  for (float f : {448.0f, 464.0f, 480.0f, INFINITY, NAN, std::ldexp(1.0f, -10), 1e-38f}) {
    centers.push_back(f);
  }
  for (float c : centers) {
    uint32_t u;
    std::memcpy(&u, &c, 4);
    for (int64_t d = -4096; d <= 4096; ++d) {
      for (uint32_t sign : {0u, 0x80000000u}) {
        const uint32_t v = static_cast<uint32_t>(static_cast<int64_t>(u) + d) ^ sign;
        const float x = FromBits(v);
        ASSERT_EQ(EncodeE4M3Satfinite(x), EncodeE4M3(x)) << std::hexfloat << x;
      }
    }
  }
}

TEST(E4M3EncodeTest, NanKeepsItsSign) {
  EXPECT_EQ(EncodeE4M3Satfinite(NAN), 0x7F);
  EXPECT_EQ(EncodeE4M3Satfinite(-NAN), 0xFF);
  EXPECT_EQ(EncodeE4M3Satfinite(-0.0f), 0x80);
  EXPECT_EQ(EncodeE4M3Satfinite(-INFINITY), 0xFE);
}

TEST(E4M3EncodeTest, ScaledEncodeTakesTheSignOfANanFromTheUnscaledValue) {
  // A GPU's x / scale is the canonical +NaN for any NaN x; the sign must
  // come from x (the CPU twin writes 0xFF for -NaN).
  for (float scale : {1.0f, 0.001f, 3.5f}) {
    EXPECT_EQ(EncodeE4M3Scaled(-NAN, scale), 0xFF) << scale;
    EXPECT_EQ(EncodeE4M3Scaled(NAN, scale), 0x7F) << scale;
    for (float x : {0.0f, -0.0f, 1.0f, -2.5f, 447.0f, 1e6f, -INFINITY}) {
      EXPECT_EQ(EncodeE4M3Scaled(x, scale), EncodeE4M3Satfinite(x / scale)) << x << " " << scale;
    }
  }
}

// Non-finite blocks: scale inf (a block with +-inf) or NaN (a block with a
// NaN). The kernel's codes equal the CPU reference's (QuantizeRows) for
// every value in such a block: a NaN quotient takes the sign of x.
TEST(E4M3EncodeTest, ScaledEncodeOfNonFiniteScalesEqualsTheReference) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (float scale : {INFINITY, nan}) {
    for (float x : {0.0f, -0.0f, 1.0f, -2.5f, 448.0f, 3e38f, INFINITY, -INFINITY, nan, -nan}) {
      // The reference makes the scale from the block's amax: a block of x
      // and a value that makes the scale `scale`; x's code is q[0].
      const float w[2] = {x, std::isnan(scale) ? nan : INFINITY};
      uint8_t q[2];
      float s;
      QuantizeRows(w, 0, 1, 2, Fp8Options{}, q, &s);
      EXPECT_EQ(EncodeE4M3Scaled(x, s), q[0]) << x << " / " << scale;
    }
  }
}

TEST(E4M3EncodeTest, HalfBitsToFloatIsExactAndKeepsTheSignOfNan) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const float f = HalfBitsToFloat(static_cast<uint16_t>(bits));
    __half_raw raw;
    raw.x = static_cast<uint16_t>(bits);
    const float want = __half2float(__half(raw));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f)) << bits;
      EXPECT_EQ(std::signbit(f), (bits & 0x8000u) != 0) << bits;
    } else {
      EXPECT_EQ(f, want) << bits;
      EXPECT_EQ(std::signbit(f), std::signbit(want)) << bits;
    }
  }
}

TEST(E4M3EncodeTest, CudaDecodeMatchesReference) {
  for (int code = 0; code < 256; ++code) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(code), __NV_E4M3);
    const float f = HalfBitsToFloat(h.x);
    const float want = DecodeE4M3(static_cast<uint8_t>(code));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f)) << code;
    } else {
      EXPECT_EQ(f, want) << code;
      EXPECT_EQ(std::signbit(f), std::signbit(want)) << code;
    }
  }
}

}  // namespace
}  // namespace weightcast
