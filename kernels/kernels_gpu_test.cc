// GPU kernels against their CPU twins, byte for byte: pack/unpack vs
// PackOutputRange, block FP8 vs the FP8 reference (payload and scales
// compared separately), the checksum kernel vs BucketChecksum.
// Every test skips cleanly on a machine without a CUDA device.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/checksum.h"
#include "gtest/gtest.h"
#include "kernels/checksum_gpu.h"
#include "kernels/checksum_cuda.h"
#include "kernels/fp8_cuda.h"
#include "kernels/fp8_reference.h"
#include "kernels/fp8_segments.h"
#include "kernels/gpu_device.h"
#include "kernels/pack_cuda.h"
#include "kernels/pack_reference.h"
#include "kernels/pack_table.h"
#include "kernels/test_layouts.h"

namespace weightcast {
namespace {

#define ASSERT_CUDA(expr) ASSERT_EQ((expr), cudaSuccess) << cudaGetErrorString(expr)

// A device allocation (freed on scope exit).
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&p_, bytes == 0 ? 1 : bytes) != cudaSuccess) p_ = nullptr;
  }
  ~DeviceBuffer() { cudaFree(p_); }
  std::byte* get() const { return static_cast<std::byte*>(p_); }
  uint64_t addr() const { return reinterpret_cast<uint64_t>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

std::vector<std::byte> ToHost(const std::byte* d, size_t n) {
  std::vector<std::byte> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n, cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

// Sources uploaded at `misalign` bytes past a 256-byte aligned base.
struct DeviceSources {
  std::vector<std::unique_ptr<DeviceBuffer>> buffers;
  std::vector<uint64_t> addrs;
};

DeviceSources Upload(const std::vector<std::vector<std::byte>>& data, size_t misalign) {
  DeviceSources d;
  for (const auto& h : data) {
    d.buffers.push_back(std::make_unique<DeviceBuffer>(h.size() + misalign));
    std::byte* p = d.buffers.back()->get() + misalign;
    EXPECT_EQ(cudaMemcpy(p, h.data(), h.size(), cudaMemcpyHostToDevice), cudaSuccess);
    d.addrs.push_back(reinterpret_cast<uint64_t>(p));
  }
  return d;
}

cudaError_t RunTable(const std::vector<CopyEntry>& table,
                     unsigned long long* guard = nullptr) {
  DeviceBuffer scratch(CopyTableScratchBytes(table.size()));
  const cudaError_t e = LaunchCopyTable(table.data(), table.size(), scratch.get(), nullptr, guard);
  if (e != cudaSuccess) return e;
  return cudaDeviceSynchronize();
}

// Device guard words, one per slot, set to kNoFinding.
struct DeviceGuard {
  explicit DeviceGuard(size_t n) : n(n), buf(n * 8) {
    EXPECT_EQ(cudaMemset(buf.get(), 0xFF, n * 8), cudaSuccess);
  }
  unsigned long long* get() const { return reinterpret_cast<unsigned long long*>(buf.get()); }
  std::vector<uint64_t> ToHostWords() const {
    std::vector<uint64_t> w(n);
    EXPECT_EQ(cudaMemcpy(w.data(), buf.get(), n * 8, cudaMemcpyDeviceToHost), cudaSuccess);
    return w;
  }
  size_t n;
  DeviceBuffer buf;
};

class PackGpuTest : public ::testing::TestWithParam<testing::Layout> {};

TEST_P(PackGpuTest, PackEqualsCpuTwinForOddRangesAndAlignments) {
  WC_SKIP_WITHOUT_GPU();
  const testing::Layout& l = GetParam();
  const auto data = testing::RandomSources(l, 21);
  std::vector<HostSource> hs;
  for (size_t i = 0; i < data.size(); ++i) hs.push_back(HostSource{l.sources[i], data[i].data()});
  const size_t es = DTypeSize(l.out.source_dtype);
  for (size_t misalign : {size_t{0}, es, 3 * es, 16 + es}) {
    DeviceSources src = Upload(data, misalign);
    for (auto [off, len] : testing::OddRanges(l.out)) {
      const uint64_t bucket_offset = 5 * es;
      std::vector<std::byte> expect(len + bucket_offset + 7, std::byte{0x5A});
      ASSERT_TRUE(PackOutputRange(l.out, hs, off, len, expect.data() + bucket_offset).ok());
      DeviceBuffer bucket(expect.size());
      ASSERT_CUDA(cudaMemset(bucket.get(), 0x5A, expect.size()));
      std::vector<CopyEntry> table;
      ASSERT_TRUE(BuildPackTable(l.out, off, len, src.addrs, bucket.addr(), bucket_offset, &table).ok());
      ASSERT_CUDA(RunTable(table));
      ASSERT_EQ(ToHost(bucket.get(), expect.size()), expect)
          << l.label << " misalign " << misalign << " range " << off << "+" << len;
      // The guard, folded into the copy: the same bytes, and per source the
      // lowest non-finite index the CPU packer's guard finds (random bytes
      // hold NaN / inf patterns).
      FiniteGuard cpu;
      ASSERT_TRUE(PackOutputRange(l.out, hs, off, len, expect.data() + bucket_offset, &cpu).ok());
      std::vector<uint32_t> slots(data.size());
      for (uint32_t i = 0; i < slots.size(); ++i) slots[i] = i;
      std::vector<CopyEntry> guarded;
      ASSERT_TRUE(BuildPackTable(l.out, off, len, src.addrs, bucket.addr(), bucket_offset,
                                 &guarded, slots)
                      .ok());
      DeviceGuard words(slots.size());
      ASSERT_CUDA(cudaMemset(bucket.get(), 0x5A, expect.size()));
      ASSERT_CUDA(RunTable(guarded, words.get()));
      ASSERT_EQ(ToHost(bucket.get(), expect.size()), expect) << l.label << " guarded";
      const std::vector<uint64_t> got_words = words.ToHostWords();
      for (uint32_t i = 0; i < slots.size(); ++i) {
        ASSERT_EQ(got_words[i], cpu.FindingOf(i))
            << l.label << " source " << i << " misalign " << misalign << " range " << off << "+"
            << len;
      }
    }
  }
}

TEST_P(PackGpuTest, UnpackWritesBackIntoSourceLayout) {
  WC_SKIP_WITHOUT_GPU();
  const testing::Layout& l = GetParam();
  const auto data = testing::RandomSources(l, 23);
  const uint64_t total = l.out.spec.ByteSize();
  DeviceSources src = Upload(data, 0);
  DeviceBuffer bucket(total);
  std::vector<CopyEntry> pack;
  ASSERT_TRUE(BuildPackTable(l.out, 0, total, src.addrs, bucket.addr(), 0, &pack).ok());
  ASSERT_CUDA(RunTable(pack));
  // Host oracle: the same unpack interpreted on the CPU into zeroed copies.
  std::vector<std::vector<std::byte>> host_back;
  std::vector<uint64_t> host_addrs;
  for (const auto& d : data) host_back.emplace_back(d.size(), std::byte{0});
  for (auto& d : host_back) host_addrs.push_back(reinterpret_cast<uint64_t>(d.data()));
  std::vector<std::byte> host_bucket = ToHost(bucket.get(), total);
  std::vector<CopyEntry> host_unpack;
  ASSERT_TRUE(BuildUnpackTable(l.out, 0, total, host_addrs,
                               reinterpret_cast<uint64_t>(host_bucket.data()), 0, &host_unpack)
                  .ok());
  ExecuteCopyTableOnHost(host_unpack);
  std::vector<std::vector<std::byte>> zeros;
  for (const auto& d : data) zeros.emplace_back(d.size(), std::byte{0});
  DeviceSources back = Upload(zeros, 0);
  std::vector<CopyEntry> unpack;
  ASSERT_TRUE(BuildUnpackTable(l.out, 0, total, back.addrs, bucket.addr(), 0, &unpack).ok());
  ASSERT_CUDA(RunTable(unpack));
  for (size_t i = 0; i < data.size(); ++i) {
    EXPECT_EQ(ToHost(back.buffers[i]->get(), data[i].size()), host_back[i]) << l.label;
  }
  // And against the sources themselves: every byte the output covers is the
  // original (a byte is covered when unpacking into 0x00- and 0xFF-filled
  // copies gives the same value there).
  std::vector<std::vector<std::byte>> ones;
  std::vector<uint64_t> ones_addrs;
  for (const auto& d : data) ones.emplace_back(d.size(), std::byte{0xFF});
  for (auto& d : ones) ones_addrs.push_back(reinterpret_cast<uint64_t>(d.data()));
  std::vector<CopyEntry> ones_unpack;
  ASSERT_TRUE(BuildUnpackTable(l.out, 0, total, ones_addrs,
                               reinterpret_cast<uint64_t>(host_bucket.data()), 0, &ones_unpack)
                  .ok());
  ExecuteCopyTableOnHost(ones_unpack);
  uint64_t covered = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    for (size_t k = 0; k < data[i].size(); ++k) {
      if (host_back[i][k] != ones[i][k]) continue;  // not written by the unpack
      ++covered;
      ASSERT_EQ(host_back[i][k], data[i][k]) << l.label << " source " << i << " byte " << k;
    }
  }
  EXPECT_GE(covered, total) << l.label << ": the unpack wrote fewer bytes than the output has";
}

INSTANTIATE_TEST_SUITE_P(Layouts, PackGpuTest, ::testing::ValuesIn(testing::PackLayouts()),
                         [](const auto& info) { return info.param.label; });

TEST(PackGpuTest, OneLaunchForManyTensors) {
  WC_SKIP_WITHOUT_GPU();
  // Every layout's full output, back to back in one bucket, one launch.
  std::vector<std::byte> expect;
  std::vector<CopyEntry> table;
  std::vector<DeviceSources> keep;
  uint64_t offset = 0;
  const auto layouts = testing::PackLayouts();
  DeviceBuffer bucket(1 << 22);
  for (const auto& l : layouts) {
    const auto data = testing::RandomSources(l, 29);
    std::vector<HostSource> hs;
    for (size_t i = 0; i < data.size(); ++i) hs.push_back(HostSource{l.sources[i], data[i].data()});
    const uint64_t total = l.out.spec.ByteSize();
    offset = (offset + 7) / 8 * 8;
    expect.resize(offset + total);
    ASSERT_TRUE(PackOutputRange(l.out, hs, 0, total, expect.data() + offset).ok());
    keep.push_back(Upload(data, 0));
    ASSERT_TRUE(BuildPackTable(l.out, 0, total, keep.back().addrs, bucket.addr(), offset, &table).ok());
    offset += total;
  }
  ASSERT_CUDA(cudaMemset(bucket.get(), 0, bucket.bytes()));
  ASSERT_CUDA(RunTable(table));
  std::vector<std::byte> got = ToHost(bucket.get(), expect.size());
  // Padding between tensors stays zero in both.
  ASSERT_EQ(got, expect);
}

TEST(PackGpuTest, RejectsBadTablesBeforeLaunch) {
  WC_SKIP_WITHOUT_GPU();
  DeviceBuffer scratch(CopyTableScratchBytes(1));
  CopyEntry e{.src = 0, .dst = 0x1000, .src_row_stride = 4, .dst_row_stride = 4, .rows = 1,
              .cols = 1, .elem_size = 4};
  EXPECT_EQ(LaunchCopyTable(&e, 1, scratch.get(), nullptr), cudaErrorInvalidValue);
  e.src = 0x1000;
  e.elem_size = 3;
  EXPECT_EQ(LaunchCopyTable(&e, 1, scratch.get(), nullptr), cudaErrorInvalidValue);
  e.elem_size = 4;
  EXPECT_EQ(LaunchCopyTable(&e, 1, nullptr, nullptr), cudaErrorInvalidValue);
}

// ---- FP8 ----

// One quantization through the batch launcher, waited for (its scratch is
// freed on return).
cudaError_t Quantize(const Fp8QuantizeParams& p) {
  DeviceBuffer scratch(Fp8QuantizeScratchBytes(1));
  if (const cudaError_t e = LaunchFp8Quantize(&p, 1, scratch.get(), nullptr); e != cudaSuccess) {
    return e;
  }
  return cudaDeviceSynchronize();
}

uint16_t FloatToBf16Bits(float f) {  // truncation is fine: any bf16 is a test value
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>(u >> 16);
}

// Values that probe every encode edge: NaN of both signs, +-inf, +-448 and
// around it, the rounding midpoints 464 / 480, subnormal codes, -0.
std::vector<float> EdgeValues() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  return {0.0f, -0.0f, nan, -nan, INFINITY, -INFINITY, 448.0f, -448.0f, 449.0f, 464.0f,
          465.0f, 480.0f, 1e6f, -1e30f, 1.0f / 512, 1.0f / 1024, 3.0f / 1024, 1e-30f, 0.0625f,
          0.1f, 240.0f, 232.0f, 1.0f / 64, -17.5f, 3.4e38f};
}

struct Fp8GpuCase {
  std::string label;
  DType dtype;
  uint64_t batch, rows, cols;
  Fp8Options opt;
  bool edges;  // mix edge values into one block
};

std::vector<Fp8GpuCase> Fp8Cases() {
  std::vector<Fp8GpuCase> v;
  for (DType dt : {DType::kBF16, DType::kF32, DType::kF16}) {
    for (int rule = 0; rule < 2; ++rule) {
      for (bool p2 : {false, true}) {
        Fp8Options o{.rule = static_cast<Fp8ScaleRule>(rule), .power_of_two = p2};
        const std::string tag = std::string(DTypeName(dt)) + "_r" + std::to_string(rule) +
                                (p2 ? "_p2" : "");
        v.push_back({"partial_" + tag, dt, 1, 300, 200, o, true});
        v.push_back({"bands_" + tag, dt, 3, 256, 130, o, false});
        v.push_back({"tiny_" + tag, dt, 2, 5, 7, o, true});
      }
    }
  }
  // More blocks than one wave of the grid: the grid-stride loop, outputs in
  // place (65540 bands, more than grid.y's 65535 a launch per band once took).
  v.push_back({"many_bands_BF16", DType::kBF16, 65540, 128, 4, Fp8Options{}, false});
  return v;
}

class Fp8GpuTest : public ::testing::TestWithParam<Fp8GpuCase> {};

TEST_P(Fp8GpuTest, WeightsAndScalesEqualCpuReference) {
  WC_SKIP_WITHOUT_GPU();
  const Fp8GpuCase& c = GetParam();
  const uint64_t n = c.batch * c.rows * c.cols;
  const size_t es = DTypeSize(c.dtype);
  std::mt19937 rng(31);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(n);
  for (uint64_t i = 0; i < n; ++i) values[i] = normal(rng) * std::exp2(static_cast<float>(i % 23) - 12);
  // A block of all zeros (the eps clamp), and edge values in the first block.
  for (uint64_t i = 0; i < std::min<uint64_t>(n, c.cols * 3); ++i) {
    values[n - 1 - i] = 0.0f;
  }
  if (c.edges) {
    const auto edges = EdgeValues();
    for (size_t i = 0; i < edges.size() && i < n; ++i) values[i * 3 % n] = edges[i];
  }
  std::vector<std::byte> raw(n * es);
  for (uint64_t i = 0; i < n; ++i) {
    if (c.dtype == DType::kF32) {
      std::memcpy(raw.data() + 4 * i, &values[i], 4);
    } else if (c.dtype == DType::kBF16) {
      const uint16_t b = FloatToBf16Bits(values[i]);
      std::memcpy(raw.data() + 2 * i, &b, 2);
    } else {
      // f16 bit patterns straight from random bits (includes inf/NaN/subnormals).
      const uint16_t h = static_cast<uint16_t>(rng());
      std::memcpy(raw.data() + 2 * i, &h, 2);
    }
  }
  if (c.edges && c.dtype == DType::kF16) {
    // Random bits need not hold a NaN or inf in a small tensor (the host
    // twin found the 70-element case without one): place +inf and a -NaN.
    const uint16_t inf = 0x7C00, neg_nan = 0xFE01;
    std::memcpy(raw.data(), &inf, 2);
    std::memcpy(raw.data() + 2 * (n / 2), &neg_nan, 2);
  }
  const TensorSpec src = testing::Spec("w", c.dtype, {static_cast<int64_t>(c.batch),
                                                      static_cast<int64_t>(c.rows),
                                                      static_cast<int64_t>(c.cols)});
  const uint64_t sr = (c.rows + 127) / 128, sc = (c.cols + 127) / 128;
  for (QuantKind kind : {QuantKind::kFp8Weight, QuantKind::kFp8Scale}) {
    OutputTensor out = CopyOf(src, 0);
    out.quant = kind;
    out.q_batch = c.batch, out.q_rows = c.rows, out.q_cols = c.cols;
    out.fp8 = c.opt;
    out.spec = kind == QuantKind::kFp8Weight
                   ? testing::Spec("w", DType::kF8E4M3, src.shape)
                   : testing::Spec("w_scale_inv", DType::kF32,
                                   {static_cast<int64_t>(c.batch), static_cast<int64_t>(sr),
                                    static_cast<int64_t>(sc)});
    const uint64_t total = out.spec.ByteSize();
    std::vector<std::byte> expect(total);
    HostSource hs{src, raw.data()};
    FiniteGuard cpu_guard;
    ASSERT_TRUE(PackOutputRange(out, {&hs, 1}, 0, total, expect.data(), &cpu_guard).ok());
    DeviceSources dsrc = Upload({raw}, 0);
    DeviceBuffer bucket(total + 64);
    ASSERT_CUDA(cudaMemset(bucket.get(), 0xA5, total + 64));
    Fp8Launch launch;
    const uint32_t slot[1] = {0};
    ASSERT_TRUE(BuildFp8Launch(out, 0, total, dsrc.addrs, bucket.addr(), 64, &launch, slot).ok());
    DeviceBuffer segs(launch.segments.size() * sizeof(Fp8RowSegment));
    ASSERT_CUDA(cudaMemcpy(segs.get(), launch.segments.data(), segs.bytes(), cudaMemcpyHostToDevice));
    launch.params.segments = reinterpret_cast<const Fp8RowSegment*>(segs.get());
    DeviceGuard guard(1);
    launch.params.guard = guard.get();
    ASSERT_CUDA(Quantize(launch.params));
    ASSERT_CUDA(cudaDeviceSynchronize());
    // The guard in the FP8 loop finds the CPU packer's lowest non-finite element.
    EXPECT_EQ(guard.ToHostWords()[0], cpu_guard.FindingOf(0)) << c.label;
    if (c.edges) {
      EXPECT_TRUE(cpu_guard.found()) << c.label;
    }
    const std::vector<std::byte> got = ToHost(bucket.get() + 64, total);
    for (uint64_t i = 0; i < total; ++i) {
      if (got[i] != expect[i]) {
        const uint64_t elem = kind == QuantKind::kFp8Weight ? i : i / 4;
        FAIL() << c.label << (kind == QuantKind::kFp8Weight ? " weight" : " scale") << " byte "
               << i << ": gpu " << int(got[i]) << " cpu " << int(expect[i]) << " (element "
               << elem << ", input " << (kind == QuantKind::kFp8Weight ? LoadAsFloat(c.dtype, raw.data(), elem) : 0.0f)
               << ")";
      }
    }
  }
}

// Non-finite blocks (what the sender packs with allow_non_finite): a block
// with +inf gets scale +inf, a block with a NaN (one, or all) the NaN scale
// 0x7FC00000, codes as the CPU twin's, bit for bit.
TEST(Fp8GpuNonFiniteTest, InfAndNanBlocksEqualCpuReference) {
  WC_SKIP_WITHOUT_GPU();
  const uint64_t R = 256, C = 256;
  std::vector<float> v(R * C);
  for (uint64_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 37) - 18.0f;
  v[3 * C + 5] = INFINITY;                                            // block (0, 0)
  v[7 * C + 130] = -std::numeric_limits<float>::quiet_NaN();          // block (0, 1)
  for (uint64_t r = 128; r < 256; ++r) {
    for (uint64_t c = 0; c < 128; ++c) v[r * C + c] = std::numeric_limits<float>::quiet_NaN();
  }                                                                   // block (1, 0): all NaN
  v[200 * C + 200] = -INFINITY;                                       // block (1, 1)
  std::vector<std::byte> raw(v.size() * 2);
  for (uint64_t i = 0; i < v.size(); ++i) {
    const uint16_t b = FloatToBf16Bits(v[i]);
    std::memcpy(raw.data() + 2 * i, &b, 2);
  }
  const TensorSpec src = testing::Spec("w", DType::kBF16, {256, 256});
  std::vector<float> want_scales(4);
  for (QuantKind kind : {QuantKind::kFp8Weight, QuantKind::kFp8Scale}) {
    OutputTensor out = CopyOf(src, 0);
    out.quant = kind;
    out.q_batch = 1, out.q_rows = R, out.q_cols = C;
    out.spec = kind == QuantKind::kFp8Weight ? testing::Spec("w", DType::kF8E4M3, {256, 256})
                                             : testing::Spec("w_scale_inv", DType::kF32, {2, 2});
    const uint64_t total = out.spec.ByteSize();
    std::vector<std::byte> expect(total);
    HostSource hs{src, raw.data()};
    ASSERT_TRUE(PackOutputRange(out, {&hs, 1}, 0, total, expect.data()).ok());
    if (kind == QuantKind::kFp8Scale) {
      uint32_t bits[4];
      std::memcpy(bits, expect.data(), 16);
      EXPECT_EQ(bits[0], 0x7F800000u);  // inf
      EXPECT_EQ(bits[1], 0x7FC00000u);  // one NaN
      EXPECT_EQ(bits[2], 0x7FC00000u);  // all NaN
      EXPECT_EQ(bits[3], 0x7F800000u);  // -inf
    }
    DeviceSources dsrc = Upload({raw}, 0);
    DeviceBuffer bucket(total);
    Fp8Launch launch;
    ASSERT_TRUE(BuildFp8Launch(out, 0, total, dsrc.addrs, bucket.addr(), 0, &launch).ok());
    DeviceBuffer segs(launch.segments.size() * sizeof(Fp8RowSegment));
    ASSERT_CUDA(cudaMemcpy(segs.get(), launch.segments.data(), segs.bytes(), cudaMemcpyHostToDevice));
    launch.params.segments = reinterpret_cast<const Fp8RowSegment*>(segs.get());
    ASSERT_CUDA(Quantize(launch.params));
    ASSERT_CUDA(cudaDeviceSynchronize());
    const std::vector<std::byte> got = ToHost(bucket.get(), total);
    for (uint64_t i = 0; i < total; ++i) {
      ASSERT_EQ(got[i], expect[i]) << (kind == QuantKind::kFp8Weight ? "code " : "scale byte ") << i;
    }
  }
}

TEST_P(Fp8GpuTest, DequantizeEqualsDecodeTimesScale) {
  WC_SKIP_WITHOUT_GPU();
  const Fp8GpuCase& c = GetParam();
  const uint64_t n = c.batch * c.rows * c.cols;
  const uint64_t sr = (c.rows + 127) / 128, sc = (c.cols + 127) / 128;
  std::mt19937 rng(37);
  std::vector<uint8_t> q(n);
  for (auto& b : q) b = static_cast<uint8_t>(rng());
  std::vector<float> scales(c.batch * sr * sc);
  for (auto& s : scales) s = std::ldexp(1.0f + (rng() % 100) / 100.0f, static_cast<int>(rng() % 20) - 10);
  DeviceBuffer dq(n), ds(scales.size() * 4), dout(n * 4);
  ASSERT_CUDA(cudaMemcpy(dq.get(), q.data(), n, cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(ds.get(), scales.data(), scales.size() * 4, cudaMemcpyHostToDevice));
  ASSERT_CUDA(LaunchFp8Dequantize(reinterpret_cast<const uint8_t*>(dq.get()),
                                  reinterpret_cast<const float*>(ds.get()), c.batch, c.rows,
                                  c.cols, reinterpret_cast<float*>(dout.get()), nullptr));
  ASSERT_CUDA(cudaDeviceSynchronize());
  std::vector<float> got(n);
  ASSERT_CUDA(cudaMemcpy(got.data(), dout.get(), n * 4, cudaMemcpyDeviceToHost));
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t b = i / (c.rows * c.cols), r = (i / c.cols) % c.rows, col = i % c.cols;
    const float want = DecodeE4M3(q[i]) * scales[(b * sr + r / 128) * sc + col / 128];
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got[i])) << i;
    } else {
      ASSERT_EQ(got[i], want) << i << " code " << int(q[i]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, Fp8GpuTest, ::testing::ValuesIn(Fp8Cases()),
                         [](const auto& info) { return info.param.label; });

// ---- checksum ----

TEST(ChecksumGpuTest, EqualsBucketChecksum) {
  WC_SKIP_WITHOUT_GPU();
  std::mt19937 rng(41);
  for (size_t len : {size_t{0}, size_t{1}, size_t{16}, size_t{17}, size_t{240}, size_t{241},
                     size_t{4095}, size_t{4096}, size_t{4097}, size_t{(1 << 20) + 13},
                     size_t{(64 << 20) + 4096 * 3 + 5}}) {
    for (size_t misalign : {size_t{0}, size_t{3}}) {
      std::vector<std::byte> h(len);
      for (auto& b : h) b = static_cast<std::byte>(rng());
      DeviceBuffer d(len + misalign);
      ASSERT_CUDA(cudaMemcpy(d.get() + misalign, h.data(), len, cudaMemcpyHostToDevice));
      DeviceBuffer scratch(NumChecksumChunks(len) * 8 + 8);
      auto got = DeviceBucketChecksum(d.get() + misalign, len,
                                      reinterpret_cast<uint64_t*>(scratch.get()), nullptr);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, BucketChecksum(h.data(), len)) << "len " << len << " misalign " << misalign;
    }
  }
}

}  // namespace
}  // namespace weightcast
