#include "kernels/pack_reference.h"

#include <cstring>
#include <numeric>
#include <random>

#include "gtest/gtest.h"
#include "kernels/fp8_reference.h"

namespace weightcast {
namespace {

// A source whose element i holds the value i (as uint16), so every output
// element says where it came from.
struct IotaSource {
  std::vector<uint16_t> data;
  HostSource source;
  IotaSource(const std::string& name, std::vector<int64_t> shape, uint16_t base = 0) {
    TensorSpec spec{name, DType::kBF16, shape};
    data.resize(spec.NumElements());
    std::iota(data.begin(), data.end(), base);
    source = HostSource{spec, reinterpret_cast<const std::byte*>(data.data())};
  }
};

std::vector<uint16_t> Pack(const OutputTensor& out, std::span<const HostSource> src,
                           uint64_t off = 0, uint64_t bytes = UINT64_MAX) {
  if (bytes == UINT64_MAX) bytes = out.spec.ByteSize() - off;
  std::vector<uint16_t> dst(bytes / 2);
  absl::Status s = PackOutputRange(out, src, off, bytes, reinterpret_cast<std::byte*>(dst.data()));
  EXPECT_TRUE(s.ok()) << s;
  return dst;
}

TEST(PackReferenceTest, StridedAndTransposedPiecesLandWhereTheyShould) {
  IotaSource a("a", {4, 6});
  std::vector<HostSource> src = {a.source};
  OutputTensor out;
  out.spec = TensorSpec{"o", DType::kBF16, {2 * 3 + 3 * 2}};
  out.source_dtype = DType::kBF16;
  // Rows 1..2, columns 2..4 of a; then the transpose of rows 0..1, cols 0..2.
  out.pieces = {Piece{0, 1 * 6 + 2, 2, 3, 6, false}, Piece{0, 0, 2, 3, 6, true}};
  EXPECT_EQ(Pack(out, src), (std::vector<uint16_t>{8, 9, 10, 14, 15, 16, 0, 6, 1, 7, 2, 8}));
  // Any element range equals the same slice of the whole.
  const auto whole = Pack(out, src);
  for (uint64_t b = 0; b < 12; ++b) {
    for (uint64_t e = b; e <= 12; ++e) {
      auto part = Pack(out, src, 2 * b, 2 * (e - b));
      EXPECT_TRUE(std::equal(part.begin(), part.end(), whole.begin() + b)) << b << ".." << e;
    }
  }
}

TEST(PackReferenceTest, RejectsRangesOutsideOrUnaligned) {
  IotaSource a("a", {8});
  std::vector<HostSource> src = {a.source};
  OutputTensor out = CopyOf(a.source.spec, 0);
  std::vector<std::byte> dst(64);
  EXPECT_EQ(PackOutputRange(out, src, 10, 10, dst.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PackOutputRange(out, src, 1, 2, dst.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

// FP8 through the packer equals QuantizeRows on the assembled matrix, for
// every split unit, including partial edge blocks.
TEST(PackReferenceTest, Fp8RangesEqualWholeMatrixQuantization) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0, 1);
  for (auto [batch, rows, cols] :
       {std::tuple<int, int, int>{2, 256, 200}, {3, 100, 130}, {1, 129, 5}}) {
    TensorSpec spec{"w", DType::kF32, {batch, rows, cols}};
    std::vector<float> w(spec.NumElements());
    for (auto& x : w) x = n(rng);
    std::vector<HostSource> src = {{spec, reinterpret_cast<const std::byte*>(w.data())}};
    OutputTensor q = CopyOf(spec, 0);
    q.spec.dtype = DType::kF8E4M3;
    q.quant = QuantKind::kFp8Weight;
    q.q_batch = batch;
    q.q_rows = rows;
    q.q_cols = cols;
    OutputTensor s = q;
    const int bands = (rows + 127) / 128, cbs = (cols + 127) / 128;
    s.spec = TensorSpec{"w_scale", DType::kF32, {batch, bands, cbs}};
    s.quant = QuantKind::kFp8Scale;
    ASSERT_TRUE(ValidateOutputTensor(q, std::vector<TensorSpec>{spec}).ok());
    ASSERT_TRUE(ValidateOutputTensor(s, std::vector<TensorSpec>{spec}).ok());
    std::vector<uint8_t> want_q(w.size());
    std::vector<float> want_s(batch * bands * cbs);
    for (int b = 0; b < batch; ++b) {
      QuantizeRows(w.data() + b * rows * cols, 0, rows, cols, Fp8Options{},
                   want_q.data() + b * rows * cols, want_s.data() + b * bands * cbs);
    }
    // Packed unit by unit.
    std::vector<uint8_t> got_q(w.size());
    for (uint64_t off = 0; off < q.spec.ByteSize(); off += q.SplitUnitBytes()) {
      const uint64_t len = std::min(q.SplitUnitBytes(), q.spec.ByteSize() - off);
      ASSERT_TRUE(PackOutputRange(q, src, off, len, reinterpret_cast<std::byte*>(got_q.data()) + off).ok());
    }
    EXPECT_EQ(got_q, want_q);
    std::vector<float> got_s(want_s.size());
    for (uint64_t off = 0; off < s.spec.ByteSize(); off += s.SplitUnitBytes()) {
      ASSERT_TRUE(PackOutputRange(s, src, off, s.SplitUnitBytes(),
                                  reinterpret_cast<std::byte*>(got_s.data()) + off).ok());
    }
    EXPECT_EQ(got_s, want_s);
    // A range that cuts a unit is refused.
    if (q.SplitUnitBytes() > 1) {
      EXPECT_EQ(PackOutputRange(q, src, 1, q.SplitUnitBytes(),
                                reinterpret_cast<std::byte*>(got_q.data())).code(),
                absl::StatusCode::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace weightcast
