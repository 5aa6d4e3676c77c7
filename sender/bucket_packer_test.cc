// The packers: the CPU packer's bytes (payload, zeroed padding, trailer),
// its refusals, and the GPU packer against it as the oracle (skipped
// without a GPU): a qwen3_moe model with fused experts expanded to
// per-expert tensors and block-FP8 quantized, sources split between GPU
// memory (as CUDA IPC gives them) and host memory, every byte of every
// bucket compared.
#include "sender/bucket_packer.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <random>

#include "common/checksum.h"
#include "formats/format_spec.h"
#include "gtest/gtest.h"
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

// The GPU packer writes exactly the CPU packer's bytes.
void CompareGpuWithCpu(bool fp8) {
  WC_SKIP_WITHOUT_GPU();
  Model m = MakeModel(fp8, 96 << 10);
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
  for (uint32_t g = 0; g < m.plan.buckets.size(); ++g) {
    const Bucket& b = m.plan.buckets[g];
    const size_t n = b.bytes + kBucketTrailerBytes;
    // Stale bytes in the slot must be overwritten, padding included.
    ASSERT_EQ(cudaMemset((*gpu)->slot(g % 2), 0xAB, n), cudaSuccess);
    ASSERT_TRUE(cpu->Pack(cpu_in, b, g, g % 2).ok());
    absl::Status s = (*gpu)->Pack(gpu_in, b, g, g % 2);
    ASSERT_TRUE(s.ok()) << s;
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
  for (void* d : allocations) cudaFree(d);
}

TEST(CudaBucketPackerGpuTest, ExpansionMatchesTheCpuPackerByteForByte) {
  CompareGpuWithCpu(/*fp8=*/false);
}

TEST(CudaBucketPackerGpuTest, ExpansionWithFp8MatchesTheCpuPackerByteForByte) {
  CompareGpuWithCpu(/*fp8=*/true);
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
