// The block FP8 kernel's own thread code (kernels/fp8_kernel.h), run on the
// CPU block by block and thread by thread (RunFp8KernelOnHost), against the
// CPU reference (PackOutputRange over kernels/fp8_reference.h): codes,
// scales and guard words equal, bit for bit, for bf16, f16 and f32 sources
// with NaN of both signs, infinities, zeros and rounding edges, every scale
// rule, partial blocks and batches; several quantizations, cut at band
// boundaries as buckets cut them, in one batch. The GPU runs the same
// functions (kernels_gpu_test compares the two there).
#include "kernels/fp8_kernel_host.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/finite_guard.h"
#include "kernels/fp8_kernel.h"
#include "kernels/fp8_segments.h"
#include "kernels/pack_reference.h"
#include "kernels/test_layouts.h"

namespace weightcast {
namespace {

using Bytes = std::vector<std::byte>;

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

// Source bits of dtype `dt` for `n` elements: scaled normals, a zero block,
// and (edges) NaN of both signs, +-inf, 448 and the rounding midpoints.
Bytes Source(DType dt, uint64_t n, uint64_t cols, bool edges, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = normal(rng) * std::exp2(static_cast<float>(i % 23) - 12);
  for (uint64_t i = 0; i < std::min<uint64_t>(n, cols * 3); ++i) v[n - 1 - i] = 0.0f;
  if (edges) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float e[] = {0.0f, -0.0f, nan, -nan, INFINITY, -INFINITY, 448.0f, -448.0f, 449.0f,
                       464.0f, 465.0f, 480.0f, 1e6f, -1e30f, 1.0f / 512, 3.0f / 1024, 1e-30f,
                       240.0f, 232.0f, -17.5f, 3.4e38f};
    // At distinct places, spread over the blocks (n >= 21 in every case).
    for (size_t i = 0; i < std::size(e) && i < n; ++i) v[i * (n / std::size(e))] = e[i];
  }
  const size_t es = DTypeSize(dt);
  Bytes raw(n * es);
  for (uint64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &v[i], 4);
    if (dt == DType::kF32) {
      std::memcpy(raw.data() + 4 * i, &u, 4);
    } else if (dt == DType::kBF16) {
      const uint16_t b = static_cast<uint16_t>(u >> 16);
      std::memcpy(raw.data() + 2 * i, &b, 2);
    } else {  // f16: random bit patterns (subnormals, inf, NaN of both signs)
      const uint16_t h = static_cast<uint16_t>(rng());
      std::memcpy(raw.data() + 2 * i, &h, 2);
    }
  }
  if (edges && dt == DType::kF16 && n > 2) {
    const uint16_t inf = 0x7C00, neg_nan = 0xFE01;
    std::memcpy(raw.data(), &inf, 2);
    std::memcpy(raw.data() + 2 * (n / 2), &neg_nan, 2);
  }
  return raw;
}

// The FP8 weight or scale output of a [batch, rows, cols] source.
OutputTensor Fp8Output(const TensorSpec& src, QuantKind kind, uint64_t batch, uint64_t rows,
                       uint64_t cols, Fp8Options opt) {
  OutputTensor out = CopyOf(src, 0);
  out.quant = kind;
  out.q_batch = batch, out.q_rows = rows, out.q_cols = cols;
  out.fp8 = opt;
  const int64_t sr = static_cast<int64_t>((rows + 127) / 128);
  const int64_t sc = static_cast<int64_t>((cols + 127) / 128);
  out.spec = kind == QuantKind::kFp8Weight
                 ? testing::Spec(src.name, DType::kF8E4M3, src.shape)
                 : testing::Spec(src.name + "_scale_inv", DType::kF32,
                                 {static_cast<int64_t>(batch), sr, sc});
  return out;
}

struct Case {
  DType dtype;
  uint64_t batch, rows, cols;
  Fp8Options opt;
  bool edges;
};

std::string Label(const Case& c) {
  return std::string(DTypeName(c.dtype)) + " " + std::to_string(c.batch) + "x" +
         std::to_string(c.rows) + "x" + std::to_string(c.cols) + " rule " +
         std::to_string(static_cast<int>(c.opt.rule)) + (c.opt.power_of_two ? " pow2" : "");
}

// Every case's weight and scales, each cut in two at a split unit, all in
// one batch into one bucket; compared with PackOutputRange of the same
// ranges, and each source's guard word with the CPU guard's finding.
void ExpectBatchEqualsReference(const std::vector<Case>& cases) {
  std::vector<Bytes> sources;
  std::vector<TensorSpec> specs;
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    specs.push_back(testing::Spec("w" + std::to_string(k), c.dtype,
                                  {static_cast<int64_t>(c.batch), static_cast<int64_t>(c.rows),
                                   static_cast<int64_t>(c.cols)}));
    sources.push_back(Source(c.dtype, c.batch * c.rows * c.cols, c.cols, c.edges,
                             static_cast<uint32_t>(31 + k)));
  }
  struct Range {
    size_t source;
    OutputTensor out;
    uint64_t offset, bytes, bucket_offset;
  };
  std::vector<Range> ranges;
  uint64_t bucket_bytes = 0;
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    for (QuantKind kind : {QuantKind::kFp8Weight, QuantKind::kFp8Scale}) {
      OutputTensor out = Fp8Output(specs[k], kind, c.batch, c.rows, c.cols, c.opt);
      const uint64_t total = out.spec.ByteSize(), unit = out.SplitUnitBytes();
      const uint64_t cut = total > unit ? (total / unit / 2) * unit : 0;
      for (auto [off, len] : {std::pair{uint64_t{0}, cut}, std::pair{cut, total - cut}}) {
        if (len == 0) continue;
        ranges.push_back(Range{k, out, off, len, bucket_bytes});
        bucket_bytes += (len + 15) / 16 * 16 + 16;
      }
    }
  }
  Bytes want(bucket_bytes, std::byte{0xA5}), got(bucket_bytes, std::byte{0xA5});
  std::vector<FiniteGuard> cpu_guard(cases.size());
  std::vector<unsigned long long> words(cases.size(), kNoFinding);
  std::vector<Fp8Launch> launches(ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) {
    const Range& r = ranges[i];
    HostSource hs{specs[r.source], sources[r.source].data()};
    ASSERT_TRUE(PackOutputRange(r.out, {&hs, 1}, r.offset, r.bytes, want.data() + r.bucket_offset,
                                &cpu_guard[r.source])
                    .ok());
    const uint64_t addr[1] = {Addr(sources[r.source].data())};
    const uint32_t slot[1] = {static_cast<uint32_t>(r.source)};
    ASSERT_TRUE(BuildFp8Launch(r.out, r.offset, r.bytes, addr, Addr(got.data()), r.bucket_offset,
                               &launches[i], slot)
                    .ok());
  }
  std::vector<Fp8QuantizeParams> params;
  for (Fp8Launch& l : launches) {
    l.params.segments = l.segments.data();
    l.params.guard = words.data();
    params.push_back(l.params);
  }
  ASSERT_TRUE(RunFp8KernelOnHost(params.data(), params.size()));
  for (const Range& r : ranges) {
    for (uint64_t i = 0; i < r.bytes; ++i) {
      const uint64_t at = r.bucket_offset + i;
      ASSERT_EQ(got[at], want[at]) << Label(cases[r.source])
                                   << (r.out.quant == QuantKind::kFp8Weight ? " code " : " scale byte ")
                                   << r.offset + i;
    }
  }
  EXPECT_EQ(got, want) << "bytes outside the ranges were written";
  for (size_t k = 0; k < cases.size(); ++k) {
    EXPECT_EQ(words[k], cpu_guard[k].FindingOf(0)) << Label(cases[k]);
    if (cases[k].edges) {
      EXPECT_NE(words[k], kNoFinding) << Label(cases[k]);
    }
  }
}

TEST(Fp8KernelTest, EveryTypeRuleAndShapeEqualsTheReference) {
  for (DType dt : {DType::kBF16, DType::kF32, DType::kF16}) {
    for (int rule = 0; rule < 2; ++rule) {
      for (bool p2 : {false, true}) {
        const Fp8Options o{.rule = static_cast<Fp8ScaleRule>(rule), .power_of_two = p2};
        SCOPED_TRACE(std::string(DTypeName(dt)) + " rule " + std::to_string(rule) +
                     (p2 ? " pow2" : ""));
        ExpectBatchEqualsReference({{dt, 1, 300, 200, o, true},
                                    {dt, 3, 256, 130, o, false},
                                    {dt, 2, 5, 7, o, true},
                                    {dt, 1, 128, 128, o, true}});
        if (HasFailure()) return;
      }
    }
  }
}

TEST(Fp8KernelTest, ABucketOfManyTensorsIsOneBatch) {
  // 12 tensors of assorted shapes and types, their weights and scales cut
  // at band boundaries: 48 quantizations in one run.
  std::vector<Case> cases;
  std::mt19937 rng(5);
  const DType types[] = {DType::kBF16, DType::kF16, DType::kF32};
  for (int k = 0; k < 12; ++k) {
    cases.push_back(Case{types[k % 3], 1 + rng() % 3, 1 + rng() % 400, 1 + rng() % 300,
                         Fp8Options{.rule = static_cast<Fp8ScaleRule>(k % 2),
                                    .power_of_two = k % 4 == 3},
                         k % 2 == 0});
  }
  ExpectBatchEqualsReference(cases);
}

TEST(Fp8KernelTest, InconsistentParametersAreRefusedBeforeAnythingRuns) {
  const std::vector<Fp8RowSegment> seg = {Fp8RowSegment{.src = 0x1000, .row_stride = 256,
                                                        .first_row = 0, .rows = 256}};
  std::vector<uint8_t> q(256 * 128, 0xEE);
  Fp8QuantizeParams good;
  good.segments = seg.data();
  good.num_segments = 1;
  good.q_rows = 256;
  good.q_cols = 128;
  good.row_begin = 128;
  good.row_end = 128;  // empty: fine, nothing to do
  good.dst_q = q.data();
  Fp8QuantizeParams bad = good;
  bad.row_begin = 64;  // not at a band
  bad.row_end = 256;
  const Fp8QuantizeParams both[2] = {good, bad};
  EXPECT_FALSE(RunFp8KernelOnHost(both, 2));
  bad = good;
  bad.scale_rule = 2;
  EXPECT_FALSE(RunFp8KernelOnHost(&bad, 1));
  EXPECT_EQ(q, std::vector<uint8_t>(256 * 128, 0xEE));
  EXPECT_TRUE(RunFp8KernelOnHost(&good, 1));
}

}  // namespace
}  // namespace weightcast
