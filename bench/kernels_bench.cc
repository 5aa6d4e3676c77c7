// Kernel throughput against cudaMemcpy device-to-device, measured in one run
// so only ratios are compared (see bench/README.md). Prints one table;
// never passes or fails on time.
//
// Bytes moved count reads plus writes (a D2D copy of B bytes moves 2B).
// Each case is timed with CUDA events over `reps` launches after a warm-up,
// rotating among several input sets bigger than L2 together, median taken.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/checksum_cuda.h"
#include "kernels/finite_bits.h"
#include "kernels/fp8_cuda.h"
#include "kernels/gpu_device.h"
#include "kernels/pack_cuda.h"

namespace weightcast {
namespace {

#define CHECK_CUDA(expr)                                                                  \
  do {                                                                                    \
    const cudaError_t e_ = (expr);                                                        \
    if (e_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

constexpr int kSets = 3;  // input sets rotated between reps (each >= 256 MiB)
constexpr int kReps = 20;

void* Alloc(size_t bytes) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, bytes));
  return p;
}

// Random non-zero data (never time on zeros), finite read as bf16, f16 or
// f32 (bit 14 of every 16-bit half is clear), as trained weights are: the
// non-finite guard's rows measure its common path.
void FillRandom(void* d, size_t bytes, uint32_t seed) {
  std::vector<uint32_t> h((bytes + 3) / 4);
  std::mt19937 rng(seed);
  for (auto& w : h) w = (rng() | 0x01010101u) & 0xBFFFBFFFu;
  // bf16/f32 data as floats of moderate magnitude where it matters is set by callers.
  CHECK_CUDA(cudaMemcpy(d, h.data(), bytes, cudaMemcpyHostToDevice));
}

// Median milliseconds of fn(set) over kReps launches.
double TimeMs(const std::function<void(int)>& fn) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) fn(i % kSets);
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<double> ms;
  for (int i = 0; i < kReps; ++i) {
    CHECK_CUDA(cudaEventRecord(a));
    fn(i % kSets);
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  CHECK_CUDA(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms[ms.size() / 2];
}

struct Row {
  std::string name;
  double bytes_moved;
  double ms;
};

double GBs(const Row& r) { return r.bytes_moved / (r.ms * 1e-3) / 1e9; }

// A pack table copying `n` tensors (rows x cols elements of `es` bytes, each
// read with `src_stride` elements per row, optionally transposed) from
// `src` set `s` into the bucket back to back, at `misalign` bytes.
std::vector<CopyEntry> PackTable(char* src, char* bucket, int n, uint64_t rows, uint64_t cols,
                                 uint64_t src_stride, uint32_t es, bool transpose,
                                 uint64_t misalign) {
  std::vector<CopyEntry> t;
  uint64_t so = misalign, d = 0;
  for (int i = 0; i < n; ++i) {
    CopyEntry e;
    e.src = reinterpret_cast<uint64_t>(src + so);
    e.dst = reinterpret_cast<uint64_t>(bucket + d);
    e.src_row_stride = src_stride * es;
    e.rows = rows;
    e.cols = cols;
    e.elem_size = es;
    e.transpose = transpose;
    e.dst_row_stride = (transpose ? rows : cols) * es;
    t.push_back(e);
    so += rows * src_stride * es;
    d += rows * cols * es;
  }
  return t;
}

int Main() {
  auto gpus = CudaDeviceCount();
  if (!gpus.ok() || *gpus == 0) return ReportNoGpu("kernels_bench", gpus, "nothing measured");
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MiB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20);

  constexpr size_t kBucket = 256ull << 20;
  std::vector<char*> src(kSets), dst(kSets);
  for (int s = 0; s < kSets; ++s) {
    src[s] = static_cast<char*>(Alloc(2 * kBucket + 4096));
    dst[s] = static_cast<char*>(Alloc(kBucket + 4096));
    FillRandom(src[s], 2 * kBucket + 4096, 100 + s);
  }
  void* scratch = Alloc(64 << 20);
  std::vector<Row> rows;

  const double memcpy_ms = TimeMs([&](int s) {
    CHECK_CUDA(cudaMemcpyAsync(dst[s], src[s], kBucket, cudaMemcpyDeviceToDevice));
  });
  const Row memcpy_row{"cudaMemcpy D2D 256 MiB", 2.0 * kBucket, memcpy_ms};
  rows.push_back(memcpy_row);

  // The non-finite guard: one word per tensor, reset before each launch as
  // the packer does; (unguarded ms, guarded ms) per case for the ratios.
  unsigned long long* guard = static_cast<unsigned long long*>(Alloc(4096 * 8));
  std::vector<std::pair<std::string, std::pair<double, double>>> guard_cost;
  auto pack = [&](const std::string& name, int n, uint64_t r, uint64_t c, uint64_t stride,
                  uint32_t es, bool transpose, uint64_t misalign) {
    std::vector<std::vector<CopyEntry>> tables;
    for (int s = 0; s < kSets; ++s) {
      tables.push_back(PackTable(src[s], dst[s], n, r, c, stride, es, transpose, misalign));
    }
    const double bytes = 2.0 * n * r * c * es;
    const double ms = TimeMs([&](int s) {
      CHECK_CUDA(LaunchCopyTable(tables[s].data(), tables[s].size(), scratch, nullptr));
    });
    rows.push_back({name, bytes, ms});
    for (auto& t : tables) {
      for (size_t i = 0; i < t.size(); ++i) {
        t[i].guard_base = t[i].src;
        t[i].guard_type = static_cast<uint32_t>(GuardType::kBF16);
        t[i].guard_slot = static_cast<uint32_t>(i);
      }
    }
    const double guarded = TimeMs([&](int s) {
      CHECK_CUDA(cudaMemsetAsync(guard, 0xFF, tables[s].size() * 8));
      CHECK_CUDA(LaunchCopyTable(tables[s].data(), tables[s].size(), scratch, nullptr, guard));
    });
    rows.push_back({name + ", guard", bytes, guarded});
    guard_cost.push_back({name, {ms, guarded}});
  };
  // 256 MiB buckets in several shapes (bf16, as the guard reads them).
  pack("pack 64 x 4 MiB contiguous, aligned", 64, 1, 2 << 20, 2 << 20, 2, false, 0);
  pack("pack 64 x 4 MiB contiguous, src+2 B", 64, 1, 2 << 20, 2 << 20, 2, false, 2);
  pack("pack 4096 x 64 KiB tensors", 4096, 1, 32 << 10, 32 << 10, 2, false, 0);
  pack("pack w2 slices 16x[4096,2048] of stride 4096", 16, 4096, 2048, 4096, 2, false, 0);
  pack("pack transposed 16x[2048,4096] bf16", 16, 2048, 4096, 4096, 2, true, 0);
  // Short rows, a team of lanes each (copy_table.h's RowTiling): TP 4
  // slices of a down_proj (768-byte rows), and the one-element rows a
  // transposed piece's edges become.
  pack("pack TP w2 slices 32x[4096,384] of stride 1536", 32, 4096, 384, 1536, 2, false, 0);
  pack("pack columns [8M,1] bf16 of stride 16", 1, 8 << 20, 1, 16, 2, false, 0);

  // FP8: bf16 [N, K] -> e4m3 + scales, one pass. Inputs: bf16 of moderate values.
  {
    const uint64_t N = 8192, K = 8192;  // 128 MiB of bf16 in, 64 MiB out
    std::vector<std::vector<Fp8RowSegment>> segs(kSets);
    std::vector<void*> dsegs(kSets);
    std::vector<Fp8QuantizeParams> params(kSets);
    for (int s = 0; s < kSets; ++s) {
      std::vector<uint16_t> h(N * K);
      std::mt19937 rng(7 + s);
      std::normal_distribution<float> nd(0.0f, 0.02f);
      for (auto& v : h) {
        float f = nd(rng);
        uint32_t u;
        std::memcpy(&u, &f, 4);
        v = static_cast<uint16_t>(u >> 16);
      }
      CHECK_CUDA(cudaMemcpy(src[s], h.data(), N * K * 2, cudaMemcpyHostToDevice));
      segs[s] = {Fp8RowSegment{.src = reinterpret_cast<uint64_t>(src[s]),
                               .row_stride = K * 2,
                               .first_row = 0,
                               .rows = N,
                               .guard_base = reinterpret_cast<uint64_t>(src[s])}};
      dsegs[s] = Alloc(sizeof(Fp8RowSegment));
      CHECK_CUDA(cudaMemcpy(dsegs[s], segs[s].data(), sizeof(Fp8RowSegment), cudaMemcpyHostToDevice));
      Fp8QuantizeParams& p = params[s];
      p.segments = static_cast<const Fp8RowSegment*>(dsegs[s]);
      p.num_segments = 1;
      p.src_type = Fp8SourceType::kBF16;
      p.q_rows = N;
      p.q_cols = K;
      p.row_begin = 0;
      p.row_end = N;
      p.dst_q = reinterpret_cast<uint8_t*>(dst[s]);
      p.dst_scales = reinterpret_cast<float*>(dst[s] + N * K);
    }
    const double bytes = 3.0 * N * K + 4.0 * (N / 128) * (K / 128);
    const double fp8_ms =
        TimeMs([&](int s) { CHECK_CUDA(LaunchFp8Quantize(&params[s], 1, scratch, nullptr)); });
    rows.push_back({"fp8 quantize bf16 [8192,8192]", bytes, fp8_ms});
    const double fp8_guarded = TimeMs([&](int s) {
      Fp8QuantizeParams p = params[s];
      p.guard = guard;  // every segment's guard_slot is 0
      CHECK_CUDA(cudaMemsetAsync(guard, 0xFF, 8));
      CHECK_CUDA(LaunchFp8Quantize(&p, 1, scratch, nullptr));
    });
    rows.push_back({"fp8 quantize bf16 [8192,8192], guard", bytes, fp8_guarded});
    guard_cost.push_back({"fp8 quantize bf16 [8192,8192]", {fp8_ms, fp8_guarded}});
    // A bucket of many expert weights: 512 x bf16 [256, 512], one launch
    // for all (the packer's batch), from the same 128 MiB of input.
    {
      constexpr int kTensors = 512;
      const uint64_t r = 256, c = 512;
      std::vector<std::vector<Fp8QuantizeParams>> batch(kSets);
      std::vector<void*> bsegs(kSets);
      for (int s = 0; s < kSets; ++s) {
        std::vector<Fp8RowSegment> hs;
        for (int t = 0; t < kTensors; ++t) {
          const uint64_t at = reinterpret_cast<uint64_t>(src[s]) + t * r * c * 2;
          hs.push_back(Fp8RowSegment{.src = at, .row_stride = c * 2, .first_row = 0, .rows = r,
                                     .guard_base = at});
        }
        bsegs[s] = Alloc(hs.size() * sizeof(Fp8RowSegment));
        CHECK_CUDA(cudaMemcpy(bsegs[s], hs.data(), hs.size() * sizeof(Fp8RowSegment),
                              cudaMemcpyHostToDevice));
        for (int t = 0; t < kTensors; ++t) {
          Fp8QuantizeParams p = params[s];
          p.segments = static_cast<const Fp8RowSegment*>(bsegs[s]) + t;
          p.q_rows = r;
          p.q_cols = c;
          p.row_end = r;
          p.dst_q = reinterpret_cast<uint8_t*>(dst[s]) + t * r * c;
          p.dst_scales = reinterpret_cast<float*>(dst[s] + N * K) + t * (r / 128) * (c / 128);
          batch[s].push_back(p);
        }
      }
      rows.push_back({"fp8 quantize 512 x bf16 [256,512], one launch", bytes,
                      TimeMs([&](int s) {
                        CHECK_CUDA(LaunchFp8Quantize(batch[s].data(), batch[s].size(), scratch,
                                                     nullptr));
                      })});
    }
    rows.push_back({"fp8 dequantize -> f32 [8192,8192]", 5.0 * N * K,
                    TimeMs([&](int s) {
                      CHECK_CUDA(LaunchFp8Dequantize(
                          reinterpret_cast<uint8_t*>(dst[s]),
                          reinterpret_cast<float*>(dst[s] + N * K), 1, N, K,
                          reinterpret_cast<float*>(src[(s + 1) % kSets] + kBucket), nullptr));
                    })});
  }
  rows.push_back({"checksum chunk digests 256 MiB (reads only)", 1.0 * kBucket,
                  TimeMs([&](int s) {
                    CHECK_CUDA(LaunchChunkDigests(src[s], kBucket, static_cast<uint64_t*>(scratch),
                                                  nullptr));
                  })});

  const double ref = GBs(memcpy_row);
  std::printf("\n%-48s %10s %10s %12s\n", "case", "ms", "GB/s", "vs memcpy");
  for (const Row& r : rows) {
    std::printf("%-48s %10.3f %10.1f %12.3f\n", r.name.c_str(), r.ms, GBs(r), GBs(r) / ref);
  }
  std::printf("\ngoal (issue 5): pack and fp8 quantize >= 0.8 x memcpy (bytes read+written)\n");
  std::printf("\n%-48s %12s\n", "non-finite guard (issue 15)", "guarded/plain");
  for (const auto& [name, t] : guard_cost) {
    std::printf("%-48s %12.3f\n", name.c_str(), t.first / t.second);
  }
  std::printf("(throughput with the guard over without, same run; finite data)\n");
  return 0;
}

}  // namespace
}  // namespace weightcast

int main() { return weightcast::Main(); }
