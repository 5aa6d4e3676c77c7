// Layouts shared by the pack tests (host and GPU): odd shapes, strided
// slices, transposed pieces, multi-piece assemblies, with the sources
// filled with random bytes so every misplaced byte shows.
#ifndef WEIGHTCAST_KERNELS_TEST_LAYOUTS_H_
#define WEIGHTCAST_KERNELS_TEST_LAYOUTS_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/output_tensor.h"

namespace weightcast::testing {

struct Layout {
  std::string label;
  std::vector<TensorSpec> sources;
  OutputTensor out;
};

inline TensorSpec Spec(std::string name, DType dtype, std::vector<int64_t> shape) {
  TensorSpec s;
  s.name = std::move(name);
  s.dtype = dtype;
  s.shape = std::move(shape);
  return s;
}

inline std::vector<Layout> PackLayouts() {
  std::vector<Layout> v;
  {  // A plain copy of an odd-shaped bf16 tensor.
    Layout l{"plain_bf16", {Spec("a", DType::kBF16, {37, 53})}, {}};
    l.out = CopyOf(l.sources[0], 0);
    v.push_back(l);
  }
  {  // One-byte elements, length not a multiple of anything.
    Layout l{"plain_u8", {Spec("b", DType::kU8, {100003})}, {}};
    l.out = CopyOf(l.sources[0], 0);
    v.push_back(l);
  }
  {  // vLLM w2: down_proj [E=3, H=40, I=96] sliced on its last dim (TP rank 1 of 3).
    Layout l{"w2_slice", {Spec("down", DType::kBF16, {3, 40, 96})}, {}};
    l.out.spec = Spec("w2", DType::kBF16, {3, 40, 32});
    l.out.source_dtype = DType::kBF16;
    for (uint64_t e = 0; e < 3; ++e) {
      l.out.pieces.push_back(Piece{.source = 0, .src_offset = e * 40 * 96 + 32, .rows = 40,
                                   .cols = 32, .src_row_stride = 96});
    }
    v.push_back(l);
  }
  {  // vLLM w13 from per-expert gate/up [I=24, H=19] f32, TP rank 1 of 2, 2 experts.
    Layout l{"w13_tp", {}, {}};
    for (int e = 0; e < 2; ++e) {
      l.sources.push_back(Spec("gate" + std::to_string(e), DType::kF32, {24, 19}));
      l.sources.push_back(Spec("up" + std::to_string(e), DType::kF32, {24, 19}));
    }
    l.out.spec = Spec("w13", DType::kF32, {2, 24, 19});
    l.out.source_dtype = DType::kF32;
    for (uint32_t e = 0; e < 2; ++e) {
      for (uint32_t k = 0; k < 2; ++k) {
        l.out.pieces.push_back(Piece{.source = 2 * e + k, .src_offset = 12 * 19, .rows = 12,
                                     .cols = 19, .src_row_stride = 19});
      }
    }
    v.push_back(l);
  }
  {  // Llama-4 style: gate_up [E=2, H=17, 2I=22] stored transposed; gate_e^T [11, 17].
    Layout l{"transposed", {Spec("gate_up", DType::kBF16, {2, 17, 22})}, {}};
    l.out.spec = Spec("gate_t", DType::kBF16, {2, 11, 17});
    l.out.source_dtype = DType::kBF16;
    for (uint64_t e = 0; e < 2; ++e) {
      l.out.pieces.push_back(Piece{.source = 0, .src_offset = e * 17 * 22, .rows = 17, .cols = 11,
                                   .src_row_stride = 22, .transpose = true});
    }
    v.push_back(l);
  }
  {  // Large transposed f32 (tiles larger than one 32x32 block, partial edges).
    Layout l{"transposed_big", {Spec("w", DType::kF32, {70, 45})}, {}};
    l.out.spec = Spec("wt", DType::kF32, {45, 70});
    l.out.source_dtype = DType::kF32;
    l.out.pieces.push_back(
        Piece{.source = 0, .rows = 70, .cols = 45, .src_row_stride = 45, .transpose = true});
    v.push_back(l);
  }
  return v;
}

inline std::vector<std::vector<std::byte>> RandomSources(const Layout& l, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<std::byte>> data;
  for (const TensorSpec& s : l.sources) {
    std::vector<std::byte> d(s.ByteSize());
    for (auto& b : d) b = static_cast<std::byte>(rng());
    data.push_back(std::move(d));
  }
  return data;
}

// Element-aligned byte ranges of `out` that start and end at odd places.
inline std::vector<std::pair<uint64_t, uint64_t>> OddRanges(const OutputTensor& out) {
  const uint64_t es = DTypeSize(out.spec.dtype);
  const uint64_t n = out.spec.NumElements();
  std::vector<std::pair<uint64_t, uint64_t>> r = {{0, n * es}};
  for (uint64_t a : {uint64_t{1}, uint64_t{7}, n / 3, n / 2 + 5}) {
    for (uint64_t len : {uint64_t{1}, uint64_t{13}, n / 4 + 3, n}) {
      if (a >= n) continue;
      r.push_back({a * es, std::min(len, n - a) * es});
    }
  }
  return r;
}

}  // namespace weightcast::testing

#endif  // WEIGHTCAST_KERNELS_TEST_LAYOUTS_H_
