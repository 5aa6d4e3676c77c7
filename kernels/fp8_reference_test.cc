#include "kernels/fp8_reference.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include "gtest/gtest.h"
#include "tools/testing/python.h"

namespace weightcast {
namespace {

TEST(Fp8ReferenceTest, EveryCodeRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    const uint8_t code = static_cast<uint8_t>(c);
    const float v = DecodeE4M3(code);
    if ((code & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(v));
      EXPECT_EQ(EncodeE4M3(v), code);  // NaN keeps its sign
      continue;
    }
    EXPECT_EQ(EncodeE4M3(v), code) << c << " -> " << v;
  }
  EXPECT_EQ(DecodeE4M3(0x7E), 448.0f);
  EXPECT_EQ(DecodeE4M3(0x01), 0x1p-9f);
  EXPECT_EQ(DecodeE4M3(0x08), 0x1p-6f);
}

TEST(Fp8ReferenceTest, EdgeValues) {
  EXPECT_EQ(EncodeE4M3(0.0f), 0x00);
  EXPECT_EQ(EncodeE4M3(-0.0f), 0x80);
  EXPECT_EQ(EncodeE4M3(448.0f), 0x7E);
  EXPECT_EQ(EncodeE4M3(1e9f), 0x7E);  // saturates
  EXPECT_EQ(EncodeE4M3(-INFINITY), 0xFE);
  EXPECT_EQ(EncodeE4M3(NAN), 0x7F);
  EXPECT_EQ(EncodeE4M3(0x1p-10f), 0x00);            // tie between 0 and 2^-9: even is 0
  EXPECT_EQ(EncodeE4M3(0x1p-9f * 1.5f), 0x02);      // tie 1 vs 2: even is 2
  EXPECT_EQ(EncodeE4M3(1.0625f), 0x38);             // tie 1.0 vs 1.125: even is 1.0
  EXPECT_EQ(EncodeE4M3(1.1875f), 0x3A);             // tie 1.125 vs 1.25: even is 1.25
  EXPECT_EQ(EncodeE4M3(0x1p-6f * (1 - 0x1p-10f)), 0x08);  // rounds up into the normals
}

struct Case {
  float value;
  uint8_t code;
};

std::vector<Case> ReadCases(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<Case> out;
  char rec[5];
  while (in.read(rec, 5)) {
    Case c;
    std::memcpy(&c.value, rec, 4);
    c.code = static_cast<uint8_t>(rec[4]);
    out.push_back(c);
  }
  return out;
}

void ExpectAll(const std::vector<Case>& cases) {
  ASSERT_GT(cases.size(), 10000u);
  int mismatches = 0;
  for (const Case& c : cases) {
    if (EncodeE4M3(c.value) != c.code && ++mismatches < 10) {
      ADD_FAILURE() << "value " << c.value << ": got " << int(EncodeE4M3(c.value)) << ", ml_dtypes "
                    << int(c.code);
    }
  }
  EXPECT_EQ(mismatches, 0);
}

// Bit for bit against an independent encoder (ml_dtypes), from a golden file
// so machines without ml_dtypes check the same cases...
TEST(Fp8ReferenceTest, MatchesMlDtypesGolden) {
  ExpectAll(ReadCases("tests/golden/fp8/e4m3_cases.bin"));
}

// ...and live where ml_dtypes is installed.
TEST(Fp8ReferenceTest, MatchesMlDtypesLive) {
  WC_REQUIRE_PYTHON("ml_dtypes, numpy");
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string out = std::string(tmp ? tmp : "/tmp") + "/live.bin";
  ASSERT_EQ(testing::RunPython("tests/golden/fp8/make_e4m3_cases.py " + out + " >/dev/null"), 0);
  ExpectAll(ReadCases(out));
}

TEST(Fp8ReferenceTest, ScaleRules) {
  Fp8Options amax{.rule = Fp8ScaleRule::kAmaxClamp};
  Fp8Options clamp{.rule = Fp8ScaleRule::kScaleClamp};
  EXPECT_EQ(Fp8BlockScale(448.0f, amax), 1.0f);
  EXPECT_EQ(Fp8BlockScale(0.0f, amax), 1e-4f / 448.0f);
  EXPECT_EQ(Fp8BlockScale(0.0f, clamp), 1e-12f);
  EXPECT_EQ(Fp8BlockScale(896.0f, clamp), 2.0f);
  Fp8Options pow2{.rule = Fp8ScaleRule::kAmaxClamp, .power_of_two = true};
  EXPECT_EQ(Fp8BlockScale(448.0f, pow2), 1.0f);    // already a power of two
  EXPECT_EQ(Fp8BlockScale(449.0f, pow2), 2.0f);    // rounds up
  EXPECT_EQ(Fp8BlockScale(100.0f, pow2), 0.25f);   // 100/448 = 0.223 -> 2^-2
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Non-finite input (the sender's allow_non_finite): a block holding +-inf
// gets scale +inf, its finite values +-0 and its infinities NaN; a block
// holding a NaN gets the NaN scale 0x7FC00000 and NaN codes, each with the
// sign of its input.
TEST(Fp8ReferenceTest, NonFiniteBlocksFollowTheReferenceQuantizer) {
  for (const Fp8Options& o :
       {Fp8Options{.rule = Fp8ScaleRule::kAmaxClamp}, Fp8Options{.rule = Fp8ScaleRule::kScaleClamp},
        Fp8Options{.rule = Fp8ScaleRule::kAmaxClamp, .power_of_two = true}}) {
    // One [2, 130] matrix: block 0 holds +inf (and -0), block 1 (2 columns) a NaN.
    std::vector<float> w(2 * 130, 1.5f);
    w[3] = INFINITY;
    w[130 + 4] = -0.0f;
    w[130 + 5] = -2.0f;
    w[129] = -NAN;
    std::vector<uint8_t> q(w.size());
    float scales[2];
    QuantizeRows(w.data(), 0, 2, 130, o, q.data(), scales);
    EXPECT_EQ(Bits(scales[0]), 0x7F800000u);
    EXPECT_EQ(Bits(scales[1]), 0x7FC00000u);
    for (int c = 0; c < 128; ++c) {
      EXPECT_EQ(q[c], c == 3 ? 0x7F : 0x00) << c;                  // inf / inf, 1.5 / inf
      EXPECT_EQ(q[130 + c], c == 4 || c == 5 ? 0x80 : 0x00) << c;  // -0, -2 / inf
    }
    EXPECT_EQ(q[128], 0x7F);  // 1.5 / NaN
    EXPECT_EQ(q[129], 0xFF);  // -NaN keeps its sign
    EXPECT_EQ(q[130 + 128], 0x7F);
    EXPECT_EQ(q[130 + 129], 0x7F);
  }
  EXPECT_EQ(Bits(Fp8BlockScale(NAN, Fp8Options{})), 0x7FC00000u);
  EXPECT_EQ(Bits(Fp8BlockScale(-NAN, Fp8Options{.power_of_two = true})), 0x7FC00000u);
  EXPECT_EQ(Fp8BlockScale(INFINITY, Fp8Options{.rule = Fp8ScaleRule::kScaleClamp}), INFINITY);
  EXPECT_EQ(Fp8BlockScale(INFINITY, Fp8Options{.power_of_two = true}), INFINITY);
}

// The same against torch itself, live where it is installed: scales bit for
// bit, codes bit for bit but for the sign of NaN codes (torch's comes from
// the hardware's division; ours is the input's).
TEST(Fp8ReferenceTest, NonFiniteBlocksMatchTorchLive) {
  WC_REQUIRE_PYTHON("torch, numpy");
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string out = std::string(tmp ? tmp : "/tmp") + "/torch_nonfinite.bin";
  ASSERT_EQ(testing::RunPython("tests/golden/fp8/torch_nonfinite_blocks.py " + out), 0);
  std::ifstream in(out, std::ios::binary);
  constexpr int kN = 128 * 128;
  int cases = 0;
  uint32_t rule;
  while (in.read(reinterpret_cast<char*>(&rule), 4)) {
    std::vector<float> x(kN);
    float want_scale;
    std::vector<uint8_t> want(kN);
    ASSERT_TRUE(in.read(reinterpret_cast<char*>(x.data()), kN * 4));
    ASSERT_TRUE(in.read(reinterpret_cast<char*>(&want_scale), 4));
    ASSERT_TRUE(in.read(reinterpret_cast<char*>(want.data()), kN));
    std::vector<uint8_t> q(kN);
    float scale;
    QuantizeRows(x.data(), 0, 128, 128, Fp8Options{.rule = static_cast<Fp8ScaleRule>(rule)},
                 q.data(), &scale);
    EXPECT_EQ(Bits(scale), Bits(want_scale)) << "case " << cases;
    for (int i = 0; i < kN; ++i) {
      const bool nan = (want[i] & 0x7F) == 0x7F;
      ASSERT_EQ(nan ? (q[i] & 0x7F) : q[i], nan ? 0x7F : want[i])
          << "case " << cases << " element " << i << " input " << x[i];
      if (nan) {
        ASSERT_EQ(q[i] & 0x80, Bits(x[i]) >> 24 & 0x80) << "case " << cases << " " << i;
      }
    }
    ++cases;
  }
  EXPECT_EQ(cases, 16);
}

TEST(Fp8ReferenceTest, QuantizedBlocksDequantizeWithinTheBound) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0, 1);
  for (auto [rows, cols] : {std::pair<int, int>{1, 1}, {130, 257}, {256, 128}, {7, 300}}) {
    std::vector<float> w(rows * cols);
    for (auto& x : w) x = n(rng) * (rng() % 2 ? 0.001f : 10.0f);
    w[0] = 0.0f;
    const int bands = (rows + 127) / 128, cbs = (cols + 127) / 128;
    std::vector<uint8_t> q(w.size());
    std::vector<float> scales(bands * cbs);
    const uint64_t padded_rows = rows % 128 ? rows : rows;
    QuantizeRows(w.data(), 0, padded_rows, cols, Fp8Options{}, q.data(), scales.data());
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) {
        const float s = scales[(r / 128) * cbs + c / 128];
        const float x = w[r * cols + c];
        const float d = DecodeE4M3(q[r * cols + c]) * s;
        EXPECT_LE(std::fabs(d - x), std::max(0x1p-4f * std::fabs(x), 0x1p-10f * s))
            << rows << "x" << cols << " at " << r << "," << c;
      }
    }
    EXPECT_EQ(q[0], 0);  // zeros stay zero
    // Each block's largest value maps near the top of the range.
    float amax = 0;
    for (int r = 0; r < std::min(rows, 128); ++r)
      for (int c = 0; c < std::min(cols, 128); ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
    EXPECT_EQ(scales[0], std::max(amax, 1e-4f) / 448.0f);
  }
}

}  // namespace
}  // namespace weightcast
