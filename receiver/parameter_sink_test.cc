// ParameterSink: target checks; then, for host-memory targets (always) and
// GPU targets (on a GPU, from device slots as with NCCL and from host
// buckets as with gloo): whole versions byte for byte, tensors split across
// buckets, staged all-or-nothing, the in-place dirty flag, and the vLLM
// FusedMoE layout assembled in the targets equal to what TransformingSink
// (the CPU path that writes checkpoints) makes of the same buckets.
#include "receiver/parameter_sink.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/gpu_device.h"
#ifdef WEIGHTCAST_HOST_TWIN
#include "kernels/host_twin/memory.h"
#endif
#include "receiver/callback_sink.h"
#include "receiver/test_versions.h"
#include "receiver/transforming_sink.h"

namespace weightcast {
namespace {

using Mode = ParameterSink::Mode;
using testing::Bytes;
using Version = testing::BucketedVersion;

Version MakeVersion(std::vector<TensorSpec> specs, uint64_t weight_version, uint64_t bucket_bytes,
                    uint32_t seed) {
  return testing::MakeBucketedVersion(specs, weight_version, bucket_bytes, seed);
}

enum class Backend { kHost, kGpu, kGpuFromHost };

std::string Name(Backend b) {
  return b == Backend::kHost ? "host" : b == Backend::kGpu ? "gpu" : "gpu_from_host";
}

// Target parameters and landing slots in the backend's memory.
struct Memory {
  explicit Memory(Backend b) : backend(b) {}
  ~Memory() {
    for (void* p : device) cudaFree(p);
  }
  bool TargetsOnGpu() const { return backend != Backend::kHost; }

  std::byte* Make(const Bytes& init, bool on_gpu) {
    if (!on_gpu) {
      host.push_back(std::make_unique<Bytes>(init));
      return host.back()->data();
    }
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(init.size(), 1)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, init.data(), init.size(), cudaMemcpyHostToDevice), cudaSuccess);
    device.push_back(p);
    return static_cast<std::byte*>(p);
  }
  std::byte* Target(const Bytes& init) { return Make(init, TargetsOnGpu()); }
  std::byte* Slot(const Bytes& init) { return Make(init, backend == Backend::kGpu); }

  Bytes Read(const std::byte* p, size_t n, bool on_gpu) const {
    Bytes out(n);
    if (!on_gpu) {
      std::copy(p, p + n, out.begin());
    } else {
      EXPECT_EQ(cudaMemcpy(out.data(), p, n, cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return out;
  }
  Bytes ReadTarget(const std::byte* p, size_t n) const { return Read(p, n, TargetsOnGpu()); }

  void Scribble(std::byte* slot, size_t n, bool on_gpu) {
    if (!on_gpu) {
      std::fill(slot, slot + n, std::byte{0xEE});
    } else {
      EXPECT_EQ(cudaMemset(slot, 0xEE, n), cudaSuccess);
    }
  }

  Backend backend;
  uint64_t copier_allocations = 0;  // host targets: CountingCopier's count
  std::vector<std::unique_ptr<Bytes>> host;
  std::vector<void*> device;
};

// Counts what a sink asks of its copier that allocates on a GPU: a buffer,
// or a table longer than it reserved scratch for.
class CountingCopier final : public ParameterCopier {
 public:
  CountingCopier(std::unique_ptr<ParameterCopier> inner, uint64_t* count)
      : inner_(std::move(inner)), count_(count) {}
  int device() const override { return inner_->device(); }
  absl::StatusOr<std::unique_ptr<CopierBuffer>> Allocate(uint64_t bytes) override {
    ++*count_;
    return inner_->Allocate(bytes);
  }
  absl::Status CopyFromHost(std::byte* dst, const std::byte* src, uint64_t n) override {
    return inner_->CopyFromHost(dst, src, n);
  }
  absl::Status Copy(std::byte* dst, const std::byte* src, uint64_t n) override {
    return inner_->Copy(dst, src, n);
  }
  absl::Status ReserveTable(size_t entries) override {
    if (entries > reserved_) ++*count_;
    reserved_ = std::max(reserved_, entries);
    return inner_->ReserveTable(entries);
  }
  absl::Status Run(std::span<const CopyEntry> table) override {
    if (table.size() > reserved_) {
      ++*count_;
      reserved_ = table.size();
    }
    return inner_->Run(table);
  }
  absl::Status Wait() override { return inner_->Wait(); }

 private:
  std::unique_ptr<ParameterCopier> inner_;
  uint64_t* count_;
  size_t reserved_ = 0;
};

std::unique_ptr<ParameterSink> MakeSink(Memory& mem,
                                        absl::flat_hash_map<std::string, ParameterTarget> targets,
                                        Mode mode, LayoutBuilder layout = {}) {
  const Backend b = mem.backend;
  std::unique_ptr<ParameterSink> sink =
      b == Backend::kHost
          ? std::make_unique<ParameterSink>(
                std::make_unique<CountingCopier>(NewHostParameterCopier(), &mem.copier_allocations),
                std::move(targets), mode, std::move(layout))
          : std::make_unique<ParameterSink>(0, std::move(targets), mode, std::move(layout));
  sink->SetWriteDevice(b == Backend::kGpu ? 0 : -1);
  return sink;
}

// What the sinks of `mem` allocated so far: the counting copier's count for
// host targets, the host twin's cudaMalloc count for GPU ones (a real GPU
// has no such count: 0).
uint64_t Allocations(const Memory& mem) {
#ifdef WEIGHTCAST_HOST_TWIN
  return mem.copier_allocations + host_twin::AllocationCount();
#else
  return mem.copier_allocations;
#endif
}

// Writes every bucket of `v` as the receiver would: from a landing slot
// that is scribbled over once the bucket ended (the slot is reused).
// Begin made every buffer of the version: Feed fails if the sink allocates
// while the buckets arrive (the test's own slots are made first).
absl::Status Feed(Sink& sink, const Version& v, Memory& mem) {
  std::vector<std::byte*> slots;
  for (const Bytes& b : v.buckets) slots.push_back(mem.Slot(b));
  const uint64_t allocated = Allocations(mem);
  for (size_t g = 0; g < v.buckets.size(); ++g) {
    std::byte* slot = slots[g];
    for (const auto& [t, seg] : v.manifest.bucket_segments[g]) {
      if (absl::Status s = sink.Write(t, seg.tensor_offset, slot + seg.bucket_offset, seg.bytes);
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = sink.EndBucket(); !s.ok()) return s;
    mem.Scribble(slot, v.buckets[g].size(), mem.backend == Backend::kGpu);
  }
  if (Allocations(mem) != allocated) {
    return absl::InternalError(absl::StrCat("the sink allocated ", Allocations(mem) - allocated,
                                            " times while the buckets arrived"));
  }
  return absl::OkStatus();
}

std::vector<TensorSpec> ThreeTensors() {
  return {{"a", DType::kBF16, {40, 33}}, {"b", DType::kF32, {10}}, {"c", DType::kU8, {777}}};
}

TEST(ParameterSinkTest, EveryTensorNeedsATargetOfItsSizeAndEveryTargetATensor) {
  GlobalManifest m = MakeVersion(ThreeTensors(), 3, 512, 1).manifest;
  int fake = 0;
  auto sink = [&](absl::flat_hash_map<std::string, ParameterTarget> t) {
    return ParameterSink(NewHostParameterCopier(), std::move(t), Mode::kStaged);
  };
  ParameterSink missing = sink({{"a", {&fake, 2640}}, {"b", {&fake, 40}}});
  absl::Status s = missing.Begin(m);
  ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("'c' has no target"), std::string::npos) << s;
  ParameterSink wrong = sink({{"a", {&fake, 2640}}, {"b", {&fake, 39}}, {"c", {&fake, 777}}});
  s = wrong.Begin(m);
  ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("'b': 40 bytes arrive, its target has 39"), std::string::npos) << s;
  ParameterSink extra = sink(
      {{"a", {&fake, 2640}}, {"b", {&fake, 40}}, {"c", {&fake, 777}}, {"d", {&fake, 1}}});
  s = extra.Begin(m);
  ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("target parameter 'd' is not a tensor of version 3"),
            std::string::npos)
      << s;
  // After a failed Begin nothing is written or committed.
  std::byte byte{};
  EXPECT_EQ(missing.Write(0, 0, &byte, 1).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(missing.Commit().status().code(), absl::StatusCode::kInternal);
}

TEST(ParameterSinkTest, GpuTargetsWithoutAGpuAreAFailedPrecondition) {
  absl::StatusOr<int> gpus = CudaDeviceCount();
  ASSERT_TRUE(gpus.ok());
  if (*gpus > 0) GTEST_SKIP() << "a GPU is present";
  GlobalManifest m = MakeVersion(ThreeTensors(), 3, 512, 1).manifest;
  int fake = 0;
  ParameterSink sink(0, {{"a", {&fake, 2640}}, {"b", {&fake, 40}}, {"c", {&fake, 777}}},
                     Mode::kInPlace);
  absl::Status s = sink.Begin(m);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("no CUDA device"), std::string::npos) << s;
}

class ParameterSinkBackendTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() != Backend::kHost) WC_SKIP_WITHOUT_GPU();
  }
};

// Three versions into the same targets: commit, then (aborted) a version
// the group does not commit, then commit again.
void RunVersions(Backend b, Mode mode) {
  Memory mem(b);
  const std::vector<TensorSpec> specs = ThreeTensors();
  const Version v1 = MakeVersion(specs, 1, 1000, 10);  // 'a' spans three buckets
  const Version v2 = MakeVersion(specs, 2, 1000, 20);
  const Version v3 = MakeVersion(specs, 3, 256, 30);
  absl::flat_hash_map<std::string, ParameterTarget> targets;
  std::vector<std::byte*> at;
  for (const TensorSpec& s : specs) {
    at.push_back(mem.Target(Bytes(s.ByteSize(), std::byte{0x11})));
    targets[s.name] = ParameterTarget{at.back(), s.ByteSize()};
  }
  auto sink = MakeSink(mem, targets, mode);
  auto expect_holds = [&](const Version& v, const char* when) {
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(mem.ReadTarget(at[i], specs[i].ByteSize()), v.tensors[i])
          << specs[i].name << " " << when;
    }
  };
  ASSERT_TRUE(sink->Begin(v1.manifest).ok());
  ASSERT_TRUE(Feed(*sink, v1, mem).ok());
  ASSERT_TRUE(sink->Commit().ok());
  expect_holds(v1, "after version 1");
  EXPECT_FALSE(sink->dirty());

  ASSERT_TRUE(sink->Begin(v2.manifest).ok());
  ASSERT_TRUE(Feed(*sink, v2, mem).ok());
  sink->Abort();  // the group voted it down
  if (mode == Mode::kStaged) {
    expect_holds(v1, "after aborted version 2");  // nothing of it reached a parameter
    EXPECT_FALSE(sink->dirty());
  } else {
    EXPECT_TRUE(sink->dirty());
  }

  ASSERT_TRUE(sink->Begin(v3.manifest).ok());
  ASSERT_TRUE(Feed(*sink, v3, mem).ok());
  absl::StatusOr<std::string> where = sink->Commit();
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ(*where, "version 3 in 3 parameters");
  expect_holds(v3, "after version 3");
  EXPECT_FALSE(sink->dirty());
}

TEST_P(ParameterSinkBackendTest, StagedVersionsAreAllOrNothing) {
  RunVersions(GetParam(), Mode::kStaged);
}
TEST_P(ParameterSinkBackendTest, InPlaceVersionsReportDirtyParametersUntilACommit) {
  RunVersions(GetParam(), Mode::kInPlace);
}

TEST_P(ParameterSinkBackendTest, AVersionMissingBytesIsNotCommitted) {
  Memory mem(GetParam());
  const Version v = MakeVersion(ThreeTensors(), 4, 1000, 40);
  absl::flat_hash_map<std::string, ParameterTarget> targets;
  std::vector<std::byte*> at;
  for (const ManifestTensor& t : v.manifest.tensors) {
    at.push_back(mem.Target(Bytes(t.spec.ByteSize(), std::byte{0x22})));
    targets[t.spec.name] = ParameterTarget{at.back(), t.spec.ByteSize()};
  }
  auto sink = MakeSink(mem, targets, Mode::kStaged);
  ASSERT_TRUE(sink->Begin(v.manifest).ok());
  // Only the first bucket arrives.
  std::byte* slot = mem.Slot(v.buckets[0]);
  for (const auto& [t, seg] : v.manifest.bucket_segments[0]) {
    ASSERT_TRUE(sink->Write(t, seg.tensor_offset, slot + seg.bucket_offset, seg.bytes).ok());
  }
  ASSERT_TRUE(sink->EndBucket().ok());
  // A segment out of order is refused, naming the tensor.
  absl::Status s = sink->Write(0, 4, slot, 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("tensor 'a': segment [4, +4) out of order"), std::string::npos) << s;
  absl::StatusOr<std::string> c = sink->Commit();
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("tensor 'a': 1000 of 2640 bytes arrived"),
            std::string::npos)
      << c.status();
  sink->Abort();
  EXPECT_EQ(mem.ReadTarget(at[0], 2640), Bytes(2640, std::byte{0x22}));
}

// A Qwen3-MoE style block: 4 experts of gate/up [I, H], down [H, I], plus a
// norm that passes through; FP8 adds the 128x128 block scales.
std::vector<TensorSpec> MoeBlock(bool fp8) {
  constexpr int64_t E = 4, I = 256, H = 136;
  const DType w = fp8 ? DType::kF8E4M3 : DType::kBF16;
  const std::string p = "model.layers.0.mlp.experts";
  std::vector<TensorSpec> specs = {{"model.norm.weight", DType::kBF16, {H}}};
  for (int e = 0; e < E; ++e) {
    for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
      const bool down = std::string(proj) == "down_proj";
      const std::vector<int64_t> shape = down ? std::vector<int64_t>{H, I}
                                              : std::vector<int64_t>{I, H};
      specs.push_back({absl::StrCat(p, ".", e, ".", proj, ".weight"), w, shape});
      if (fp8) {
        specs.push_back({absl::StrCat(p, ".", e, ".", proj, ".weight_scale_inv"), DType::kF32,
                         {(shape[0] + 127) / 128, (shape[1] + 127) / 128}});
      }
    }
  }
  return specs;
}

LayoutBuilder QwenVllm(VllmRank rank) { return VllmLayoutBuilder("qwen3_moe", rank); }

// What the checkpoint path makes of the same buckets: TransformingSink over
// a sink that keeps every output.
std::map<std::string, Bytes> ThroughTransformingSink(const Version& v, LayoutBuilder layout) {
  std::map<std::string, Bytes> got;
  TensorCallbacks cb;
  cb.tensor = [&got](const ReceivedTensor& t) {
    got[t.spec->name] = Bytes(t.data, t.data + t.bytes);
    return absl::OkStatus();
  };
  CallbackSink keep(std::move(cb));
  TransformingSink sink(&keep, std::move(layout));
  Memory host(Backend::kHost);
  EXPECT_TRUE(sink.Begin(v.manifest).ok());
  EXPECT_TRUE(Feed(sink, v, host).ok());
  EXPECT_TRUE(sink.Commit().ok());
  return got;
}

TEST_P(ParameterSinkBackendTest, VllmLayoutInTheTargetsEqualsTheCheckpointPath) {
  for (bool fp8 : {false, true}) {
    for (VllmRank rank : {VllmRank{1, 2, 2, 3}, VllmRank{0, 1, 0, 1}}) {
      for (Mode mode : {Mode::kStaged, Mode::kInPlace}) {
        SCOPED_TRACE(absl::StrCat(fp8 ? "fp8" : "bf16", " tp ", rank.tp_rank, "/", rank.tp_size,
                                  " ep ", rank.ep_rank, "/", rank.ep_size,
                                  mode == Mode::kStaged ? " staged" : " in place"));
        // Odd buckets: experts split across them.
        const Version v = MakeVersion(MoeBlock(fp8), 5, 50'000 + 7, fp8 ? 50 : 60);
        const std::map<std::string, Bytes> want = ThroughTransformingSink(v, QwenVllm(rank));
        ASSERT_TRUE(want.count("model.layers.0.mlp.experts.w13_weight"));
        ASSERT_EQ(want.count("model.layers.0.mlp.experts.w13_weight_scale_inv"), fp8 ? 1u : 0u);
        Memory mem(GetParam());
        absl::flat_hash_map<std::string, ParameterTarget> targets;
        std::map<std::string, std::byte*> at;
        for (const auto& [name, bytes] : want) {
          at[name] = mem.Target(Bytes(bytes.size(), std::byte{0x33}));
          targets[name] = ParameterTarget{at[name], bytes.size()};
        }
        auto sink = MakeSink(mem, targets, mode, QwenVllm(rank));
        ASSERT_TRUE(sink->Begin(v.manifest).ok());
        ASSERT_TRUE(Feed(*sink, v, mem).ok());
        const uint64_t fed = Allocations(mem);
        absl::StatusOr<std::string> c = sink->Commit();
        ASSERT_TRUE(c.ok()) << c.status();
        EXPECT_EQ(Allocations(mem), fed) << "Commit allocated";
        for (const auto& [name, bytes] : want) {
          EXPECT_EQ(mem.ReadTarget(at[name], bytes.size()), bytes) << name;
        }
      }
    }
  }
}

// A segment of an assembled output's source that the manifest has in one
// piece has no place held for it: refused, naming the tensor, and nothing
// reaches a parameter.
TEST(ParameterSinkTest, APartOfASourceTheManifestHasWholeIsRefusedNamingIt) {
  const Version v = MakeVersion(MoeBlock(false), 6, 1 << 20, 70);  // one bucket
  ASSERT_EQ(v.buckets.size(), 1u);
  const VllmRank rank{0, 1, 0, 1};
  const std::map<std::string, Bytes> want = ThroughTransformingSink(v, QwenVllm(rank));
  Memory mem(Backend::kHost);
  absl::flat_hash_map<std::string, ParameterTarget> targets;
  std::map<std::string, std::byte*> at;
  for (const auto& [name, bytes] : want) {
    at[name] = mem.Target(Bytes(bytes.size(), std::byte{0x44}));
    targets[name] = ParameterTarget{at[name], bytes.size()};
  }
  auto sink = MakeSink(mem, targets, Mode::kInPlace, QwenVllm(rank));
  ASSERT_TRUE(sink->Begin(v.manifest).ok());
  const std::string gate = "model.layers.0.mlp.experts.0.gate_proj.weight";
  uint32_t t = 0;
  while (v.manifest.tensors[t].spec.name != gate) ++t;
  absl::Status s = sink->Write(t, 0, v.tensors[t].data(), 64);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("tensor '" + gate + "': segment [0, +64) of a tensor the manifest "
                             "has whole"),
            std::string::npos)
      << s;
  sink->Abort();
  EXPECT_FALSE(sink->dirty());
  for (const auto& [name, bytes] : want) {
    EXPECT_EQ(mem.ReadTarget(at[name], bytes.size()), Bytes(bytes.size(), std::byte{0x44})) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ParameterSinkBackendTest,
                         ::testing::Values(Backend::kHost, Backend::kGpu, Backend::kGpuFromHost),
                         [](const auto& info) { return Name(info.param); });

}  // namespace
}  // namespace weightcast
