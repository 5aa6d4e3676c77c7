// The packers: the CPU packer's bytes (payload, zeroed padding, trailer),
// its refusals, and the GPU packer against it as the oracle (skipped
// without a GPU): a qwen3_moe model with fused experts expanded to
// per-expert tensors and block-FP8 quantized, sources split between GPU
// memory (as CUDA IPC gives them) and host memory, every byte of every
// bucket compared.
#include "sender/bucket_packer.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "common/checksum.h"
#include "formats/format_spec.h"
#include "gtest/gtest.h"
#ifdef WEIGHTCAST_HOST_TWIN
#include "kernels/host_twin/memory.h"
#endif
#include "kernels/gpu_device.h"
#include "kernels/pack_reference.h"
#include "protocol/wire_format.h"
#include "sender/cuda_bucket_packer.h"
#include "sender/wire_tensors.h"

namespace weightcast {
namespace {

// Sources of one qwen3_moe layer in the fused (transformers 5) layout, with
// odd sizes so FP8 edge blocks and split rows appear; finite bf16 values.
struct Model {
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
  std::vector<OutputTensor> outputs;
  BucketPlan plan;
};

Model MakeModel(bool fp8, uint64_t bucket_bytes) {
  Model m;
  const int64_t e = 3, h = 136, i = 200;
  m.specs = {
      {"model.embed_tokens.weight", DType::kBF16, {300, h}},
      {"model.layers.0.input_layernorm.weight", DType::kBF16, {h}},
      {"model.layers.0.self_attn.q_proj.weight", DType::kBF16, {h, h}},
      {"model.layers.0.mlp.gate.weight", DType::kBF16, {e, h}},
      {"model.layers.0.mlp.experts.gate_up_proj", DType::kBF16, {e, 2 * i, h}},
      {"model.layers.0.mlp.experts.down_proj", DType::kBF16, {e, h, i}},
      {"lm_head.weight", DType::kBF16, {300, h}},
  };
  std::mt19937 rng(7);
  for (const TensorSpec& s : m.specs) {
    std::vector<std::byte> d(s.ByteSize());
    for (size_t k = 0; k + 1 < d.size(); k += 2) {
      const uint16_t v = static_cast<uint16_t>(0x3800 + rng() % 0x0800) | (rng() % 2 ? 0x8000 : 0);
      std::memcpy(&d[k], &v, 2);
    }
    m.data.push_back(std::move(d));
  }
  FormatOptionsText text{.family = "qwen3_moe", .source_layout = "fused"};
  if (fp8) text.quant_method = "fp8-block";
  absl::StatusOr<FormatSpec> format = ParseFormatOptions(text);
  EXPECT_TRUE(format.ok()) << format.status();
  absl::StatusOr<WireTensors> wire = BuildWireTensors(*format, m.specs, "");
  EXPECT_TRUE(wire.ok()) << wire.status();
  m.outputs = wire->outputs;
  absl::StatusOr<BucketPlan> plan = PlanBuckets(m.outputs, bucket_bytes, 0);
  EXPECT_TRUE(plan.ok()) << plan.status();
  m.plan = *plan;
  return m;
}

std::vector<HostSource> HostSources(const Model& m) {
  std::vector<HostSource> s;
  for (size_t k = 0; k < m.specs.size(); ++k) s.push_back({m.specs[k], m.data[k].data()});
  return s;
}

TEST(HostBucketPackerTest, WritesPayloadZeroPaddingAndTrailer) {
  Model m = MakeModel(/*fp8=*/false, 64 << 10);
  std::vector<HostSource> sources = HostSources(m);
  PackInput in{.outputs = m.outputs, .sources = sources, .weight_version = 5};
  auto packer = NewHostBucketPacker();
  ASSERT_FALSE(packer->device());
  size_t max_bytes = 0;
  for (const Bucket& b : m.plan.buckets) max_bytes = std::max<size_t>(max_bytes, b.bytes);
  ASSERT_TRUE(packer->Reserve(max_bytes + kBucketTrailerBytes).ok());
  ASSERT_GE(m.plan.buckets.size(), 3u);
  bool saw_padding = false;
  for (uint32_t g = 0; g < m.plan.buckets.size(); ++g) {
    const Bucket& b = m.plan.buckets[g];
    std::byte* slot = packer->slot(g % 2);
    std::memset(slot, 0xAB, b.bytes + kBucketTrailerBytes);  // stale bytes must not survive
    ASSERT_TRUE(packer->Pack(in, b, g, g % 2).ok());
    std::vector<std::byte> expect(b.bytes, std::byte{0});
    for (const Segment& s : b.segments) {
      ASSERT_TRUE(PackOutputRange(m.outputs[s.tensor], sources, s.tensor_offset, s.bytes,
                                  expect.data() + s.bucket_offset)
                      .ok());
      saw_padding |= s.bucket_offset % kSegmentAlignment == 0 && s.bucket_offset > 0 &&
                     s.bytes % kSegmentAlignment != 0;
    }
    ASSERT_EQ(std::memcmp(slot, expect.data(), b.bytes), 0) << "bucket " << g;
    absl::StatusOr<BucketTrailer> t = DecodeBucketTrailer(slot + b.bytes);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->checksum, BucketChecksum(expect.data(), b.bytes));
    EXPECT_EQ(t->bucket_index, g);
    EXPECT_EQ(t->weight_version, 5u);
    EXPECT_EQ(t->payload_bytes, b.bytes);
  }
  EXPECT_TRUE(saw_padding);
}

TEST(HostBucketPackerTest, RefusesGpuSourcesAndMixedTensors) {
  Model m = MakeModel(/*fp8=*/false, 64 << 10);
  std::vector<HostSource> sources = HostSources(m);
  // Source 4 (gate_up_proj) "in GPU memory": the host packer must not read it.
  std::vector<uint8_t> on_device(sources.size(), 0);
  on_device[4] = 1;
  PackInput in{.outputs = m.outputs, .sources = sources, .on_device = on_device};
  auto packer = NewHostBucketPacker();
  ASSERT_TRUE(packer->Reserve(1 << 20).ok());
  absl::Status failed;
  for (uint32_t g = 0; g < m.plan.buckets.size() && failed.ok(); ++g) {
    failed = packer->Pack(in, m.plan.buckets[g], g, 0);
  }
  ASSERT_EQ(failed.code(), absl::StatusCode::kFailedPrecondition) << failed;
  EXPECT_NE(failed.message().find("experts.0.gate_proj"), std::string::npos) << failed;

  // One output reading a host source and a GPU source is refused by name.
  OutputTensor mixed;
  mixed.spec = {"mixed", DType::kBF16, {2, 136}};
  mixed.source_dtype = DType::kBF16;
  mixed.pieces = {Piece{.source = 0, .rows = 1, .cols = 136, .src_row_stride = 136},
                  Piece{.source = 4, .rows = 1, .cols = 136, .src_row_stride = 136}};
  absl::StatusOr<SourcePlace> place = PlaceOfSources(in, mixed);
  ASSERT_EQ(place.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(place.status().message().find("'mixed'"), std::string::npos);
}

// Values of `dtype` as raw bytes: finite ones, and the three non-finite
// classes.
std::vector<std::byte> Encode(DType dtype, double x) {
  std::vector<std::byte> b(DTypeSize(dtype));
  const float f = static_cast<float>(x);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  switch (dtype) {
    case DType::kF64: std::memcpy(b.data(), &x, 8); break;
    case DType::kF32: std::memcpy(b.data(), &f, 4); break;
    case DType::kBF16: {
      const uint16_t h = static_cast<uint16_t>(u >> 16);
      std::memcpy(b.data(), &h, 2);
      break;
    }
    default: {  // f16: the values used here are 0.5 + k / 1024, inf and NaN
      uint16_t h = (u >> 16) & 0x8000;
      if (std::isnan(f)) h |= 0x7E00;
      else if (std::isinf(f)) h |= 0x7C00;
      else h |= static_cast<uint16_t>(0x3800 + std::lround((std::fabs(f) - 0.5) * 2048));
      std::memcpy(b.data(), &h, 2);
    }
  }
  return b;
}

// The guard of the CPU packer, per dtype and class: the bucket holding the
// value fails naming the source tensor, the class and the lowest flat
// index (another, later, non-finite value in the same tensor is not the
// one named); the bucket is packed all the same; with the guard off every
// bucket packs.
TEST(HostBucketPackerTest, GuardNamesTheTensorAndFirstIndexForEachDtype) {
  const std::string name = "model.layers.3.mlp.down_proj.weight";
  for (DType dt : {DType::kBF16, DType::kF16, DType::kF32, DType::kF64}) {
    for (double bad : {std::numeric_limits<double>::infinity(),
                       -std::numeric_limits<double>::infinity(),
                       std::numeric_limits<double>::quiet_NaN()}) {
      const std::string cls = std::isnan(bad) ? "NaN" : bad > 0 ? "+inf" : "-inf";
      std::vector<TensorSpec> specs = {{"model.embed_tokens.weight", dt, {50, 64}},
                                       {name, dt, {128, 300}}};
      std::vector<std::vector<std::byte>> data;
      for (const TensorSpec& s : specs) {
        std::vector<std::byte> d;
        for (int64_t k = 0; k < s.NumElements(); ++k) {
          const auto v = Encode(dt, 0.5 + static_cast<double>(k % 512) / 1024);
          d.insert(d.end(), v.begin(), v.end());
        }
        data.push_back(std::move(d));
      }
      const size_t es = DTypeSize(dt);
      const auto b = Encode(dt, bad), later = Encode(dt, std::numeric_limits<double>::infinity());
      std::memcpy(data[1].data() + 12345 * es, b.data(), es);
      std::memcpy(data[1].data() + 12346 * es, later.data(), es);
      std::memcpy(data[1].data() + 30000 * es, later.data(), es);
      std::vector<OutputTensor> outputs = {CopyOf(specs[0], 0), CopyOf(specs[1], 1)};
      absl::StatusOr<BucketPlan> plan = PlanBuckets(outputs, 64 << 10, 0);
      ASSERT_TRUE(plan.ok()) << plan.status();
      std::vector<HostSource> sources = {{specs[0], data[0].data()}, {specs[1], data[1].data()}};
      auto packer = NewHostBucketPacker();
      ASSERT_TRUE(packer->Reserve((64 << 10) + kBucketTrailerBytes).ok());
      PackInput guarded{.outputs = outputs, .sources = sources, .weight_version = 2};
      PackInput open = guarded;
      open.check_finite = false;
      absl::Status first;
      uint32_t failed_bucket = 0;
      for (uint32_t g = 0; g < plan->buckets.size(); ++g) {
        const Bucket& bucket = plan->buckets[g];
        ASSERT_TRUE(packer->Pack(open, bucket, g, 1).ok()) << DTypeName(dt) << " bucket " << g;
        absl::Status s = packer->Pack(guarded, bucket, g, 0);
        if (!s.ok() && first.ok()) {
          first = s;
          failed_bucket = g;
        }
        if (!s.ok()) {
          EXPECT_TRUE(IsNonFiniteValueError(s)) << s;
          // Packed all the same: the same bytes and trailer as unguarded.
          EXPECT_EQ(std::memcmp(packer->slot(0), packer->slot(1), bucket.bytes + kBucketTrailerBytes), 0);
        }
      }
      ASSERT_FALSE(first.ok()) << DTypeName(dt);
      EXPECT_EQ(first.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(first.message().find("bucket " + std::to_string(failed_bucket) + ": tensor '" +
                                     name + "': non-finite value (" + cls + ") at element 12345"),
                std::string::npos)
          << DTypeName(dt) << ": " << first;
    }
  }
}

// Several threads pack a large bucket (whole segments each, guards merged)
// into the bytes one thread makes, with the same findings.
TEST(HostBucketPackerTest, PackingOnThreadsGivesTheBytesAndFindingsOfOne) {
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
  std::vector<OutputTensor> outputs;
  for (int t = 0; t < 70; ++t) {
    specs.push_back({"model.layers." + std::to_string(t) + ".mlp.down_proj.weight", DType::kBF16,
                     {512, 256}});
  }
  for (size_t t = 0; t < specs.size(); ++t) {
    std::vector<std::byte> d(specs[t].ByteSize());
    for (size_t k = 0; k < d.size(); ++k) d[k] = static_cast<std::byte>((k * 31 + t) % 251);
    data.push_back(std::move(d));
    outputs.push_back(CopyOf(specs[t], static_cast<uint32_t>(t)));
  }
  const auto inf = Encode(DType::kBF16, std::numeric_limits<double>::infinity());
  for (size_t t : {3, 40, 69}) std::memcpy(data[t].data() + 2 * (1000 + t), inf.data(), 2);
  std::vector<HostSource> sources;
  for (size_t t = 0; t < specs.size(); ++t) sources.push_back({specs[t], data[t].data()});
  absl::StatusOr<BucketPlan> plan = PlanBuckets(outputs, 64 << 20, 0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->buckets.size(), 1u);
  const Bucket& bucket = plan->buckets[0];
  std::vector<const Segment*> segs;
  for (const Segment& s : bucket.segments) segs.push_back(&s);
  PackInput input{.outputs = outputs, .sources = sources, .weight_version = 1};
  std::vector<std::byte> one(bucket.bytes), four(bucket.bytes);
  FiniteGuard g1, g4;
  ASSERT_TRUE(PackSegmentsOnHost(input, segs, 0, one.data(), &g1, 1).ok());
  ASSERT_TRUE(PackSegmentsOnHost(input, segs, 0, four.data(), &g4, 4).ok());
  EXPECT_EQ(one, four);
  for (uint32_t t = 0; t < specs.size(); ++t) {
    EXPECT_EQ(g1.FindingOf(t), g4.FindingOf(t)) << t;
    EXPECT_EQ(g1.FindingOf(t) != kNoFinding, t == 3 || t == 40 || t == 69) << t;
  }
  EXPECT_EQ(NonFiniteStatus(g4, input, 0).message(), NonFiniteStatus(g1, input, 0).message());
}

// Through expert fusion and block FP8: the index is the source's (the fused
// gate_up_proj), the error names the source, not the per-expert output;
// integer tensors are never checked.
TEST(HostBucketPackerTest, GuardNamesTheSourceOfAssembledAndQuantizedOutputs) {
  for (bool fp8 : {false, true}) {
    Model m = MakeModel(fp8, 96 << 10);
    const uint64_t index = 2 * 400 * 136 + 7 * 136 + 9;  // expert 2, row 7, column 9
    const uint16_t nan = 0xFFC1;                          // a negative NaN with a payload
    std::memcpy(m.data[4].data() + index * 2, &nan, 2);
    std::vector<HostSource> sources = HostSources(m);
    PackInput in{.outputs = m.outputs, .sources = sources};
    auto packer = NewHostBucketPacker();
    ASSERT_TRUE(packer->Reserve((96 << 10) + kBucketTrailerBytes).ok());
    std::vector<std::string> errors;
    for (uint32_t g = 0; g < m.plan.buckets.size(); ++g) {
      absl::Status s = packer->Pack(in, m.plan.buckets[g], g, 0);
      if (!s.ok()) errors.push_back(std::string(s.message()));
    }
    ASSERT_GE(errors.size(), 1u);
    for (const std::string& e : errors) {
      EXPECT_NE(e.find("tensor 'model.layers.0.mlp.experts.gate_up_proj': non-finite value (NaN) "
                       "at element " + std::to_string(index)),
                std::string::npos)
          << e;
    }
  }
  TensorSpec ints{"step", DType::kI16, {4096}};
  std::vector<uint16_t> bits(4096, 0x7F80);  // +inf as bf16, but these are integers
  std::vector<HostSource> sources = {{ints, reinterpret_cast<const std::byte*>(bits.data())}};
  std::vector<OutputTensor> outputs = {CopyOf(ints, 0)};
  absl::StatusOr<BucketPlan> plan = PlanBuckets(outputs, 64 << 10, 0);
  ASSERT_TRUE(plan.ok());
  auto packer = NewHostBucketPacker();
  ASSERT_TRUE(packer->Reserve(64 << 10).ok());
  EXPECT_TRUE(packer->Pack(PackInput{.outputs = outputs, .sources = sources}, plan->buckets[0], 0, 0)
                  .ok());
}

// The GPU packer writes exactly the CPU packer's bytes. With `poison`,
// sources in GPU and in host memory hold NaN / +-inf: both packers return
// the same guard errors, bucket by bucket.
void CompareGpuWithCpu(bool fp8, bool poison = false) {
  WC_SKIP_WITHOUT_GPU();
  Model m = MakeModel(fp8, 96 << 10);
  if (poison) {
    const std::pair<size_t, std::pair<uint64_t, uint16_t>> marks[] = {
        {4, {5000, 0x7F80}}, {4, {4000, 0xFF80}}, {5, {777, 0x7FC0}}, {2, {100, 0xFF80}},
        {0, {300 * 136 - 1, 0x7F81}}};
    for (const auto& [src, at] : marks) std::memcpy(m.data[src].data() + at.first * 2, &at.second, 2);
  }
  std::vector<HostSource> host = HostSources(m);
  // Even sources in GPU memory, odd ones left in host memory (shm files).
  std::vector<HostSource> mixed = host;
  std::vector<uint8_t> on_device(host.size(), 0);
  std::vector<void*> allocations;
  for (size_t k = 0; k < host.size(); k += 2) {
    void* d = nullptr;
    ASSERT_EQ(cudaMalloc(&d, m.data[k].size()), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d, m.data[k].data(), m.data[k].size(), cudaMemcpyHostToDevice),
              cudaSuccess);
    allocations.push_back(d);
    mixed[k].data = static_cast<const std::byte*>(d);
    on_device[k] = 1;
  }
  PackInput cpu_in{.outputs = m.outputs, .sources = host, .weight_version = 9};
  PackInput gpu_in{.outputs = m.outputs, .sources = mixed, .on_device = on_device,
                   .weight_version = 9};
  auto cpu = NewHostBucketPacker();
  absl::StatusOr<std::unique_ptr<BucketPacker>> gpu = NewCudaBucketPacker(0);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  ASSERT_TRUE((*gpu)->device());
  size_t max_bytes = 0;
  for (const Bucket& b : m.plan.buckets) max_bytes = std::max<size_t>(max_bytes, b.bytes);
  ASSERT_TRUE(cpu->Reserve(max_bytes + kBucketTrailerBytes).ok());
  ASSERT_TRUE((*gpu)->Reserve(max_bytes + kBucketTrailerBytes).ok());
  ASSERT_TRUE((*gpu)->Prepare(gpu_in, m.plan.buckets).ok());
#ifdef WEIGHTCAST_HOST_TWIN
  // Prepared: no buffer grows while the buckets are packed.
  const uint64_t allocated = host_twin::AllocationCount();
#endif
  for (uint32_t g = 0; g < m.plan.buckets.size(); ++g) {
    const Bucket& b = m.plan.buckets[g];
    const size_t n = b.bytes + kBucketTrailerBytes;
    // Stale bytes in the slot must be overwritten, padding included.
    ASSERT_EQ(cudaMemset((*gpu)->slot(g % 2), 0xAB, n), cudaSuccess);
    const absl::Status want_status = cpu->Pack(cpu_in, b, g, g % 2);
    absl::Status s = (*gpu)->Pack(gpu_in, b, g, g % 2);
    if (!poison) {
      ASSERT_TRUE(want_status.ok()) << want_status;
    }
    ASSERT_EQ(s, want_status) << "bucket " << g;
    if (!s.ok()) {
      ASSERT_TRUE(IsNonFiniteValueError(s)) << s;
    }
    std::vector<std::byte> got(n);
    ASSERT_EQ(cudaMemcpy(got.data(), (*gpu)->slot(g % 2), n, cudaMemcpyDeviceToHost),
              cudaSuccess);
    const std::byte* want = cpu->slot(g % 2);
    size_t first = n;
    for (size_t k = 0; k < n && first == n; ++k) {
      if (got[k] != want[k]) first = k;
    }
    ASSERT_EQ(first, n) << "bucket " << g << " differs first at byte " << first << " of " << n;
  }
#ifdef WEIGHTCAST_HOST_TWIN
  EXPECT_EQ(host_twin::AllocationCount(), allocated) << "a packer buffer grew while packing";
#endif
  for (void* d : allocations) cudaFree(d);
}

TEST(CudaBucketPackerGpuTest, ExpansionMatchesTheCpuPackerByteForByte) {
  CompareGpuWithCpu(/*fp8=*/false);
}

TEST(CudaBucketPackerGpuTest, ExpansionWithFp8MatchesTheCpuPackerByteForByte) {
  CompareGpuWithCpu(/*fp8=*/true);
}

TEST(CudaBucketPackerGpuTest, GuardFindsWhatTheCpuPackerFinds) {
  CompareGpuWithCpu(/*fp8=*/false, /*poison=*/true);
  CompareGpuWithCpu(/*fp8=*/true, /*poison=*/true);
}

TEST(CudaBucketPackerTest, WithoutAGpuTheErrorSaysSo) {
  absl::StatusOr<int> gpus = CudaDeviceCount();
  ASSERT_TRUE(gpus.ok());
  if (*gpus > 0) GTEST_SKIP() << "a GPU is present";
  absl::StatusOr<std::unique_ptr<BucketPacker>> gpu = NewCudaBucketPacker(0);
  ASSERT_EQ(gpu.status().code(), absl::StatusCode::kFailedPrecondition) << gpu.status();
  EXPECT_NE(gpu.status().message().find("no CUDA device"), std::string::npos) << gpu.status();
}

}  // namespace
}  // namespace weightcast
