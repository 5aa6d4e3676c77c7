// BuildFp8Launch on the host: the row segments address exactly the
// assembled matrix (compared with GatherElements), and the launch
// parameters, run through a host model of the kernel's contract
// (fp8_cuda.h), give PackOutputRange's bytes.
#include "kernels/fp8_segments.h"

#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/fp8_reference.h"
#include "kernels/pack_reference.h"
#include "kernels/test_layouts.h"

namespace weightcast {
namespace {

using testing::Spec;

const uint8_t* HostRow(const Fp8Launch& l, uint64_t g) {
  for (const Fp8RowSegment& s : l.segments) {
    if (g >= s.first_row && g < s.first_row + s.rows) {
      return reinterpret_cast<const uint8_t*>(s.src) + (g - s.first_row) * s.row_stride;
    }
  }
  return nullptr;
}

// The kernel's contract, on the CPU: rows [row_begin, row_end) quantized per
// 128-row band of their matrix.
void RunOnHost(const Fp8Launch& l, DType dtype, const Fp8Options& opt) {
  const Fp8QuantizeParams& p = l.params;
  const uint64_t R = p.q_rows, C = p.q_cols, cb = (C + 127) / 128;
  uint64_t unit = 0;
  for (uint64_t g = p.row_begin; g < p.row_end; ++unit) {
    const uint64_t r = g % R;
    const uint64_t n = std::min<uint64_t>(128, R - r);
    std::vector<float> v(n * C);
    for (uint64_t i = 0; i < n; ++i) {
      const uint8_t* row = HostRow(l, g + i);
      ASSERT_NE(row, nullptr) << "row " << g + i;
      for (uint64_t c = 0; c < C; ++c) {
        v[i * C + c] = LoadAsFloat(dtype, reinterpret_cast<const std::byte*>(row), c);
      }
    }
    std::vector<float> scales(cb);
    QuantizeRows(v.data(), 0, n, C, opt,
                 p.dst_q ? p.dst_q + (g - p.row_begin) * C : nullptr, scales.data());
    if (p.dst_scales) std::memcpy(p.dst_scales + unit * cb, scales.data(), cb * 4);
    g += n;
  }
}

struct Fp8Case {
  std::string label;
  std::vector<TensorSpec> sources;
  OutputTensor out;
};

std::vector<Fp8Case> Cases() {
  std::vector<Fp8Case> v;
  for (QuantKind kind : {QuantKind::kFp8Weight, QuantKind::kFp8Scale}) {
    const bool w = kind == QuantKind::kFp8Weight;
    {  // Fused experts [E=3, 256, 200] bf16: bands tile the matrices.
      Fp8Case c{w ? "fused_w" : "fused_s", {Spec("gu", DType::kBF16, {3, 256, 200})}, {}};
      c.out = CopyOf(c.sources[0], 0);
      c.out.quant = kind;
      c.out.q_batch = 3, c.out.q_rows = 256, c.out.q_cols = 200;
      if (w) {
        c.out.spec.dtype = DType::kF8E4M3;
      } else {
        c.out.spec = Spec("gu_scale", DType::kF32, {3, 2, 2});
      }
      v.push_back(c);
    }
    {  // w13 from gate/up halves of a fused [2, 2*130, 150] f32, rows not /128.
      Fp8Case c{w ? "w13_w" : "w13_s", {Spec("gu", DType::kF32, {2, 260, 150})}, {}};
      c.out.source_dtype = DType::kF32;
      for (uint64_t e = 0; e < 2; ++e) {
        for (uint64_t k = 0; k < 2; ++k) {
          c.out.pieces.push_back(Piece{.source = 0, .src_offset = (e * 260 + k * 130 + 65) * 150,
                                       .rows = 65, .cols = 150, .src_row_stride = 150});
        }
      }
      c.out.quant = kind;
      c.out.q_batch = 2, c.out.q_rows = 130, c.out.q_cols = 150;
      c.out.spec = w ? Spec("w13", DType::kF8E4M3, {2, 130, 150})
                     : Spec("w13_scale", DType::kF32, {2, 2, 2});
      c.out.fp8.power_of_two = true;
      v.push_back(c);
    }
  }
  return v;
}

TEST(Fp8SegmentsTest, LaunchEqualsPackOutputRange) {
  for (const Fp8Case& c : Cases()) {
    SCOPED_TRACE(c.label);
    ASSERT_TRUE(ValidateOutputTensor(c.out, c.sources).ok())
        << ValidateOutputTensor(c.out, c.sources);
    testing::Layout l{c.label, c.sources, c.out};
    auto data = testing::RandomSources(l, 5);
    // Random bytes make NaNs and huge values; keep them, both sides must agree.
    std::vector<HostSource> hs;
    std::vector<uint64_t> addrs;
    for (size_t i = 0; i < data.size(); ++i) {
      hs.push_back(HostSource{c.sources[i], data[i].data()});
      addrs.push_back(reinterpret_cast<uint64_t>(data[i].data()));
    }
    const uint64_t total = c.out.spec.ByteSize(), unit = c.out.SplitUnitBytes();
    std::vector<std::pair<uint64_t, uint64_t>> ranges = {{0, total}};
    if (unit < total) ranges.push_back({unit, total - unit});
    if (2 * unit < total) ranges.push_back({unit, unit});
    for (auto [off, len] : ranges) {
      std::vector<std::byte> expect(len + 4, std::byte{0x33}), got(len + 4, std::byte{0x33});
      ASSERT_TRUE(PackOutputRange(c.out, hs, off, len, expect.data() + 4).ok());
      Fp8Launch launch;
      ASSERT_TRUE(BuildFp8Launch(c.out, off, len, addrs, reinterpret_cast<uint64_t>(got.data()),
                                 4, &launch)
                      .ok());
      RunOnHost(launch, c.out.source_dtype, c.out.fp8);
      EXPECT_EQ(0, std::memcmp(expect.data(), got.data(), got.size()))
          << "range " << off << "+" << len;
    }
  }
}

TEST(Fp8SegmentsTest, RejectsTransposedAndMisaligned) {
  Fp8Case c = Cases()[0];
  std::vector<uint64_t> addrs = {0x1000};
  Fp8Launch launch;
  EXPECT_EQ(BuildFp8Launch(c.out, 1, 200, addrs, 0x2000, 0, &launch).code(),
            absl::StatusCode::kInvalidArgument);
  c.out.pieces[0].transpose = true;
  EXPECT_EQ(BuildFp8Launch(c.out, 0, c.out.spec.ByteSize(), addrs, 0x2000, 0, &launch).code(),
            absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace weightcast
