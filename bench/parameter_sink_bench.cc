// ParameterSink (the receiver writing a version straight into an engine's
// parameters) against a plain copy of the same bytes, measured in one run:
// memcpy on the host, cudaMemcpy device to device on a GPU. Cases: every
// tensor into its parameter (staged and in place), and vLLM's FusedMoE
// layout assembled in the targets for a TP and an EP rank (fewer bytes land;
// the baseline copies exactly the bytes that land). Buckets are resident in
// the sink's memory kind (as landing slots are), tensors cut across them.
// Prints one table; never passes or fails on time.
//
//   parameter_sink_bench [--experts 32] [--layers 2] [--bucket-mib 64] [--reps 5]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/gpu_device.h"
#include "receiver/parameter_sink.h"
#include "receiver/test_versions.h"

namespace weightcast {
namespace {

#define CHECK_OK(expr)                                                              \
  do {                                                                              \
    const absl::Status s_ = (expr);                                                 \
    if (!s_.ok()) {                                                                 \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, s_.ToString().c_str()); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)
#define CHECK_CUDA(expr) CHECK_OK((expr) == cudaSuccess ? absl::OkStatus() \
                                                        : absl::InternalError(#expr))

struct Options {
  int experts = 32, layers = 2, reps = 5;
  uint64_t bucket_bytes = 64ull << 20;
};

// Qwen3-30B-A3B's expert shapes (I = 768, H = 2048), bf16, per-expert keys.
std::vector<TensorSpec> Model(const Options& o) {
  constexpr int64_t I = 768, H = 2048;
  std::vector<TensorSpec> specs = {{"model.norm.weight", DType::kBF16, {H}}};
  for (int l = 0; l < o.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".mlp.experts");
    specs.push_back({absl::StrCat("model.layers.", l, ".self_attn.q_proj.weight"), DType::kBF16,
                     {4096, H}});
    for (int e = 0; e < o.experts; ++e) {
      specs.push_back({absl::StrCat(p, ".", e, ".gate_proj.weight"), DType::kBF16, {I, H}});
      specs.push_back({absl::StrCat(p, ".", e, ".up_proj.weight"), DType::kBF16, {I, H}});
      specs.push_back({absl::StrCat(p, ".", e, ".down_proj.weight"), DType::kBF16, {H, I}});
    }
  }
  return specs;
}

LayoutBuilder Vllm(VllmRank rank) { return VllmLayoutBuilder("qwen3_moe", rank); }

double Seconds(const std::function<void()>& fn, int reps) {
  fn();  // warm-up (allocations, first touch)
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Memory of the backend: host vectors, or cudaMalloc on device 0.
struct Arena {
  bool gpu;
  std::vector<std::vector<std::byte>> host;
  std::vector<void*> device;
  // Written once, so no page is the shared zero page or untouched.
  std::byte* Alloc(size_t n) {
    if (!gpu) return host.emplace_back(n, std::byte{0x5A}).data();
    void* p = nullptr;
    CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(n, 1)));
    CHECK_CUDA(cudaMemset(p, 0x5A, n));
    device.push_back(p);
    return static_cast<std::byte*>(p);
  }
  void Upload(std::byte* dst, const testing::Bytes& src) {
    if (gpu) {
      CHECK_CUDA(cudaMemcpy(dst, src.data(), src.size(), cudaMemcpyHostToDevice));
    } else {
      std::memcpy(dst, src.data(), src.size());
    }
  }
  void Copy(std::byte* dst, const std::byte* src, size_t n) {
    if (gpu) {
      CHECK_CUDA(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToDevice));
      CHECK_CUDA(cudaDeviceSynchronize());
    } else {
      std::memcpy(dst, src, n);
    }
  }
  ~Arena() {
    for (void* p : device) cudaFree(p);
  }
};

void Run(bool gpu, const Options& o) {
  const testing::BucketedVersion v =
      testing::MakeBucketedVersion(Model(o), 1, o.bucket_bytes, 1234);
  Arena arena{gpu};
  std::vector<std::byte*> slots;
  for (const auto& b : v.buckets) {
    slots.push_back(arena.Alloc(b.size()));
    arena.Upload(slots.back(), b);
  }
  std::printf("\n%s: %zu tensors, %.1f MiB in %zu buckets of %llu MiB, median of %d\n",
              gpu ? "GPU targets, buckets on the GPU (NCCL)" : "host targets (CPU engine)",
              v.tensors.size(), v.manifest.payload_bytes / 1048576.0, v.buckets.size(),
              static_cast<unsigned long long>(o.bucket_bytes >> 20), o.reps);
  std::printf("%-34s %10s %10s %9s %12s\n", "case", "MiB landed", "ms", "GB/s", "x memcpy");
  struct Case {
    std::string name;
    ParameterSink::Mode mode;
    LayoutBuilder layout;
  };
  const std::vector<Case> cases = {
      {"wire names, in place", ParameterSink::Mode::kInPlace, {}},
      {"wire names, staged", ParameterSink::Mode::kStaged, {}},
      {"vLLM w13/w2, TP 1 of 2, in place", ParameterSink::Mode::kInPlace, Vllm({1, 2, 0, 1})},
      {"vLLM w13/w2, EP 0 of 4, in place", ParameterSink::Mode::kInPlace, Vllm({0, 1, 0, 4})},
      {"vLLM w13/w2, TP 1 of 2, staged", ParameterSink::Mode::kStaged, Vllm({1, 2, 0, 1})},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::vector<OutputTensor>> outs =
        c.layout ? c.layout(v.manifest) : IdentityLayout(v.manifest);
    CHECK_OK(outs.status());
    Arena memory{gpu};  // this case's targets and baseline buffers
    absl::flat_hash_map<std::string, ParameterTarget> targets;
    uint64_t landed = 0;
    for (const OutputTensor& out : *outs) {
      targets[out.spec.name] = ParameterTarget{memory.Alloc(out.spec.ByteSize()),
                                               out.spec.ByteSize()};
      landed += out.spec.ByteSize();
    }
    ParameterSink sink = gpu ? ParameterSink(0, targets, c.mode, c.layout)
                             : ParameterSink(NewHostParameterCopier(), targets, c.mode, c.layout);
    sink.SetWriteDevice(gpu ? 0 : -1);
    const double t = Seconds(
        [&] {
          CHECK_OK(sink.Begin(v.manifest));
          for (size_t g = 0; g < v.buckets.size(); ++g) {
            for (const auto& [i, seg] : v.manifest.bucket_segments[g]) {
              CHECK_OK(sink.Write(i, seg.tensor_offset, slots[g] + seg.bucket_offset, seg.bytes));
            }
            CHECK_OK(sink.EndBucket());
          }
          CHECK_OK(sink.Commit().status());
        },
        o.reps);
    std::byte* from = memory.Alloc(landed);
    std::byte* to = memory.Alloc(landed);
    const double base = Seconds([&] { memory.Copy(to, from, landed); }, o.reps);
    std::printf("%-34s %10.1f %10.2f %9.2f %12.2f\n", c.name.c_str(), landed / 1048576.0,
                t * 1e3, landed / t / 1e9, t / base);
  }
  std::printf("(x memcpy: the case's time over one %s of the bytes that land)\n",
              gpu ? "cudaMemcpy D2D" : "memcpy");
}

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const long value = std::strtol(argv[i + 1], nullptr, 10);
    if (flag == "--experts") o.experts = static_cast<int>(value);
    else if (flag == "--layers") o.layers = static_cast<int>(value);
    else if (flag == "--reps") o.reps = static_cast<int>(value);
    else if (flag == "--bucket-mib") o.bucket_bytes = static_cast<uint64_t>(value) << 20;
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (o.experts < 4 || o.layers < 1 || o.reps < 1 || o.bucket_bytes == 0) {
    std::fprintf(stderr, "need --experts >= 4, --layers >= 1, --reps >= 1, --bucket-mib >= 1\n");
    return 2;
  }
  Run(false, o);
  absl::StatusOr<int> gpus = CudaDeviceCount();
  if (gpus.ok() && *gpus > 0) {
    cudaDeviceProp prop;
    CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
    std::printf("\ndevice: %s\n", prop.name);
    Run(true, o);
  } else {
    std::printf("\n");
    return ReportNoGpu("parameter_sink_bench", gpus, "GPU targets not measured");
  }
  return 0;
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) { return weightcast::Main(argc, argv); }
