#include "kernels/finite_guard.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace weightcast {
namespace {

// The class of a value by the standard library, for the types it has.
FiniteClass ClassOf(double x) {
  if (std::isnan(x)) return FiniteClass::kNaN;
  if (std::isinf(x)) return x > 0 ? FiniteClass::kPosInf : FiniteClass::kNegInf;
  return FiniteClass::kFinite;
}

// Decodes the types the standard library lacks, straight from their fields.
FiniteClass ClassOfBits(GuardType t, uint64_t b) {
  switch (t) {
    case GuardType::kF16: {
      const uint64_t e = (b >> 10) & 0x1F, m = b & 0x3FF, s = b >> 15;
      if (e != 0x1F) return FiniteClass::kFinite;
      return m != 0 ? FiniteClass::kNaN : (s ? FiniteClass::kNegInf : FiniteClass::kPosInf);
    }
    case GuardType::kBF16: {
      const uint32_t u = static_cast<uint32_t>(b) << 16;
      float f;
      std::memcpy(&f, &u, 4);
      return ClassOf(f);
    }
    case GuardType::kF8E4M3:
      return (b & 0x7F) == 0x7F ? FiniteClass::kNaN : FiniteClass::kFinite;
    case GuardType::kF8E5M2: {
      const uint64_t e = (b >> 2) & 0x1F, m = b & 3, s = b >> 7;
      if (e != 0x1F) return FiniteClass::kFinite;
      return m != 0 ? FiniteClass::kNaN : (s ? FiniteClass::kNegInf : FiniteClass::kPosInf);
    }
    default:
      return FiniteClass::kFinite;
  }
}

TEST(FiniteBitsTest, EveryPatternOfTheNarrowTypesInEveryLane) {
  for (GuardType t : {GuardType::kF16, GuardType::kBF16, GuardType::kF8E4M3, GuardType::kF8E5M2}) {
    const NonFiniteLanes l = LanesOf(t);
    const uint64_t patterns = uint64_t{1} << (8 * l.bytes);
    // A finite filler (1.0 in every type) around the pattern under test.
    const uint64_t one = t == GuardType::kF16 ? 0x3C00 : t == GuardType::kBF16 ? 0x3F80
                         : t == GuardType::kF8E4M3 ? 0x38 : 0x3C;
    for (uint64_t b = 0; b < patterns; ++b) {
      const FiniteClass want = ClassOfBits(t, b);
      ASSERT_EQ(ClassifyElement(b, l), want) << int(t) << " " << b;
      for (uint32_t lane = 0; lane < 8; lane += l.bytes) {
        uint64_t w = 0;
        for (uint32_t at = 0; at < 8; at += l.bytes) w |= (at == lane ? b : one) << (8 * at);
        ASSERT_EQ(WordHasNonFinite(w, l), want != FiniteClass::kFinite)
            << int(t) << " pattern " << b << " lane " << lane;
      }
    }
  }
}

TEST(FiniteBitsTest, WideTypesAtTheirEdges) {
  std::mt19937_64 rng(5);
  const NonFiniteLanes l32 = LanesOf(GuardType::kF32), l64 = LanesOf(GuardType::kF64);
  std::vector<uint32_t> f32 = {0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFFFFFFFu, 0x7F800001u,
                               0x7F7FFFFFu, 0xFF7FFFFFu, 0, 0x80000000u, 1, 0x00800000u};
  for (int i = 0; i < 100000; ++i) f32.push_back(static_cast<uint32_t>(rng()));
  for (uint32_t u : f32) {
    float f;
    std::memcpy(&f, &u, 4);
    ASSERT_EQ(ClassifyElement(u, l32), ClassOf(f)) << u;
    ASSERT_EQ(ClassifyFloat(f), ClassOf(f)) << u;
    for (int lane = 0; lane < 2; ++lane) {
      const uint64_t w = lane == 0 ? (uint64_t{0x3F800000u} << 32) | u
                                   : (uint64_t{u} << 32) | 0x3F800000u;
      ASSERT_EQ(WordHasNonFinite(w, l32), !std::isfinite(f)) << u << " lane " << lane;
    }
  }
  std::vector<uint64_t> f64 = {0x7FF0000000000000ull, 0xFFF0000000000000ull,
                               0x7FF8000000000000ull, 0x7FF0000000000001ull,
                               0x7FEFFFFFFFFFFFFFull, 0, 0x8000000000000000ull};
  for (int i = 0; i < 100000; ++i) f64.push_back(rng());
  for (uint64_t u : f64) {
    double d;
    std::memcpy(&d, &u, 8);
    ASSERT_EQ(ClassifyElement(u, l64), ClassOf(d)) << u;
    ASSERT_EQ(WordHasNonFinite(u, l64), !std::isfinite(d)) << u;
  }
}

TEST(FiniteBitsTest, FindingsOrderByIndexAndCarryTheirClass) {
  const uint64_t a = EncodeFinding(7, FiniteClass::kNegInf), b = EncodeFinding(8, FiniteClass::kNaN);
  EXPECT_LT(a, b);
  EXPECT_LT(b, kNoFinding);
  EXPECT_EQ(FindingIndex(a), 7u);
  EXPECT_EQ(FindingClass(a), FiniteClass::kNegInf);
}

TEST(FiniteGuardTest, ScanRunFindsTheLowestIndexOfEveryType) {
  for (DType dt : {DType::kF16, DType::kBF16, DType::kF32, DType::kF64, DType::kF8E5M2}) {
    const GuardType t = GuardTypeOf(dt);
    const size_t es = DTypeSize(dt);
    // Elements 0..n-1 are zero (finite); put -inf at 29 and NaN at 41; the
    // run starts at source element 100 and at odd offsets of the buffer.
    const uint64_t n = 67;
    const NonFiniteLanes l = LanesOf(t);
    const uint64_t lane = es == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * es)) - 1;
    const uint64_t ninf = (l.mask | l.high) & lane, nan = (l.mask | l.mantissa) & lane;
    for (size_t misalign = 0; misalign < 8; misalign += es) {
      std::vector<std::byte> buf(misalign + n * es);
      std::memcpy(buf.data() + misalign + 29 * es, &ninf, es);
      std::memcpy(buf.data() + misalign + 41 * es, &nan, es);
      FiniteGuard g;
      g.ScanRun(3, t, buf.data() + misalign + 30 * es, 130, n - 30);  // only the NaN
      EXPECT_EQ(g.FindingOf(3), EncodeFinding(141, FiniteClass::kNaN)) << DTypeName(dt);
      g.ScanRun(3, t, buf.data() + misalign, 100, n);
      EXPECT_EQ(g.FindingOf(3), EncodeFinding(129, FiniteClass::kNegInf)) << DTypeName(dt);
      EXPECT_EQ(g.FindingOf(2), kNoFinding);
    }
  }
  FiniteGuard none;
  const int32_t ints[4] = {0x7F800000, -1, 0x7FC00000, 5};  // integer types are not checked
  none.ScanRun(0, GuardTypeOf(DType::kI32), reinterpret_cast<const std::byte*>(ints), 0, 4);
  EXPECT_FALSE(none.found());
}

// CopyRun is memcpy plus ScanRun in one pass: the same bytes, the same
// finding, for runs over several 16 KiB chunks, odd lengths and positions
// in the 64-byte blocks, in a block's last word, and in the tail.
TEST(FiniteGuardTest, CopyRunCopiesAndFindsWhatScanRunFinds) {
  std::mt19937 rng(9);
  for (DType dt : {DType::kBF16, DType::kF16, DType::kF32, DType::kF64, DType::kF8E4M3}) {
    const GuardType t = GuardTypeOf(dt);
    const size_t es = DTypeSize(dt);
    const NonFiniteLanes l = LanesOf(t);
    const uint64_t lane = es == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * es)) - 1;
    const uint64_t inf = l.mask & lane;  // +inf (e4m3fn: NaN)
    for (uint64_t n : {uint64_t{1}, uint64_t{7}, uint64_t{63}, uint64_t{(40 << 10) / es + 5}}) {
      std::vector<uint64_t> marks = {n - 1, 0, n / 2, n > 64 / es ? 64 / es - 1 : 0};
      for (uint64_t mark : marks) {
        for (size_t misalign : {size_t{0}, es}) {
          std::vector<std::byte> src(n * es + misalign), dst(n * es + misalign), want(n * es);
          for (auto& b : src) b = static_cast<std::byte>(rng() & 0x3F);  // finite in every type
          std::memcpy(src.data() + misalign + mark * es, &inf, es);
          FiniteGuard copy, scan;
          copy.CopyRun(1, t, dst.data() + misalign, src.data() + misalign, 10, n);
          scan.ScanRun(1, t, src.data() + misalign, 10, n);
          ASSERT_EQ(std::memcmp(dst.data() + misalign, src.data() + misalign, n * es), 0);
          ASSERT_EQ(copy.FindingOf(1), scan.FindingOf(1)) << DTypeName(dt) << " n " << n;
          ASSERT_EQ(FindingIndex(copy.FindingOf(1)), 10 + mark) << DTypeName(dt) << " n " << n;
        }
      }
    }
  }
}

TEST(FiniteGuardTest, ReportNamesTheLowestNumberedSourceAndKeepsItsMark) {
  std::vector<HostSource> sources(3);
  sources[0].spec.name = "a";
  sources[1].spec.name = "model.layers.3.mlp.down_proj.weight";
  sources[2].spec.name = "c";
  FiniteGuard g;
  EXPECT_TRUE(g.Report(sources).ok());
  g.Record(2, EncodeFinding(1, FiniteClass::kNaN));
  g.Record(1, EncodeFinding(12346, FiniteClass::kNaN));
  g.Record(1, EncodeFinding(12345, FiniteClass::kPosInf));
  g.Record(1, kNoFinding);
  const absl::Status s = g.Report(sources);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("tensor 'model.layers.3.mlp.down_proj.weight': non-finite value "
                             "(+inf) at element 12345"),
            absl::string_view::npos)
      << s;
  EXPECT_TRUE(IsNonFiniteValueError(s));
  const absl::Status prefixed = WithMessagePrefix(s, "bucket 4: ");
  EXPECT_TRUE(IsNonFiniteValueError(prefixed));
  EXPECT_EQ(prefixed.message().substr(0, 18), "bucket 4: tensor '");
  EXPECT_FALSE(IsNonFiniteValueError(absl::InvalidArgumentError(s.message())));
  g.Clear();
  EXPECT_FALSE(g.found());
}

}  // namespace
}  // namespace weightcast
