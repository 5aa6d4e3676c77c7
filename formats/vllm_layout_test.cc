#include "formats/vllm_layout.h"

#include <map>
#include <numeric>
#include <tuple>

#include "absl/strings/str_cat.h"

#include "formats/layout.h"
#include "gtest/gtest.h"
#include "kernels/pack_reference.h"

namespace weightcast {
namespace {

struct Tensors {
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
  void Add(TensorSpec s, std::vector<std::byte> d) {
    specs.push_back(std::move(s));
    data.push_back(std::move(d));
  }
  std::vector<HostSource> Sources() const {
    std::vector<HostSource> out;
    for (size_t i = 0; i < specs.size(); ++i) out.push_back({specs[i], data[i].data()});
    return out;
  }
  const std::vector<std::byte>& Of(const std::string& n) const {
    for (size_t i = 0; i < specs.size(); ++i)
      if (specs[i].name == n) return data[i];
    ADD_FAILURE() << n;
    return data[0];
  }
};

std::vector<std::byte> Iota(size_t n, float base) {
  std::vector<float> f(n);
  std::iota(f.begin(), f.end(), base);
  std::vector<std::byte> b(n * 4);
  std::memcpy(b.data(), f.data(), b.size());
  return b;
}

float At(const std::vector<std::byte>& b, size_t i) {
  float f;
  std::memcpy(&f, b.data() + 4 * i, 4);
  return f;
}

Tensors Materialize(const std::vector<OutputTensor>& outs, const Tensors& src) {
  Tensors t;
  auto s = src.Sources();
  for (const auto& o : outs) {
    std::vector<std::byte> b(o.spec.ByteSize());
    EXPECT_TRUE(PackOutputRange(o, s, 0, b.size(), b.data()).ok()) << o.spec.name;
    t.Add(o.spec, std::move(b));
  }
  return t;
}

const FamilyRules& Qwen() { return **FindFamily("qwen3_moe"); }

TEST(VllmLayoutTest, LinearExpertPlacement) {
  EXPECT_EQ(LocalExperts(5, 0, 2), (std::pair<int64_t, int64_t>{0, 3}));
  EXPECT_EQ(LocalExperts(5, 1, 2), (std::pair<int64_t, int64_t>{3, 2}));
  EXPECT_EQ(LocalExperts(5, 2, 3), (std::pair<int64_t, int64_t>{4, 1}));
  EXPECT_EQ(LocalExperts(8, 3, 4), (std::pair<int64_t, int64_t>{6, 2}));
}

TEST(VllmLayoutTest, W13AndW2ForEveryTpAndEpRank) {
  constexpr int64_t E = 5, I = 6, H = 4;
  Tensors hf;
  const std::string p = "model.layers.0.mlp.experts";
  hf.Add({"model.norm.weight", DType::kF32, {H}}, Iota(H, -1));
  for (int e = 0; e < E; ++e) {
    hf.Add({absl::StrCat(p, ".", e, ".gate_proj.weight"), DType::kF32, {I, H}}, Iota(I * H, 1000 * e));
    hf.Add({absl::StrCat(p, ".", e, ".up_proj.weight"), DType::kF32, {I, H}}, Iota(I * H, 1000 * e + 300));
    hf.Add({absl::StrCat(p, ".", e, ".down_proj.weight"), DType::kF32, {H, I}}, Iota(H * I, 1000 * e + 600));
  }
  for (int tp : {1, 2, 3}) {
    for (int ep : {1, 2, 3}) {
      for (int tr = 0; tr < tp; ++tr) {
        for (int er = 0; er < ep; ++er) {
          SCOPED_TRACE(absl::StrCat("tp ", tr, "/", tp, " ep ", er, "/", ep));
          auto outs = BuildVllmOutputs(Qwen(), hf.specs, {tr, tp, er, ep});
          ASSERT_TRUE(outs.ok()) << outs.status();
          ASSERT_EQ(outs->size(), 3u);  // norm, w13, w2
          Tensors v = Materialize(*outs, hf);
          EXPECT_EQ(v.Of("model.norm.weight"), hf.Of("model.norm.weight"));
          const auto [first, count] = LocalExperts(E, er, ep);
          const int64_t Itp = I / tp;
          const auto& w13 = v.Of(p + ".w13_weight");
          const auto& w2 = v.Of(p + ".w2_weight");
          ASSERT_EQ(w13.size(), count * 2 * Itp * H * 4u);
          for (int64_t le = 0; le < count; ++le) {
            const int64_t e = first + le;
            const auto& gate = hf.Of(absl::StrCat(p, ".", e, ".gate_proj.weight"));
            const auto& up = hf.Of(absl::StrCat(p, ".", e, ".up_proj.weight"));
            const auto& down = hf.Of(absl::StrCat(p, ".", e, ".down_proj.weight"));
            for (int64_t i = 0; i < Itp; ++i) {
              for (int64_t h = 0; h < H; ++h) {
                EXPECT_EQ(At(w13, (le * 2 * Itp + i) * H + h), At(gate, (tr * Itp + i) * H + h));
                EXPECT_EQ(At(w13, (le * 2 * Itp + Itp + i) * H + h), At(up, (tr * Itp + i) * H + h));
                EXPECT_EQ(At(w2, (le * H + h) * Itp + i), At(down, h * I + tr * Itp + i));
              }
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(BuildVllmOutputs(Qwen(), hf.specs, {0, 4, 0, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);  // 6 % 4
  EXPECT_EQ(BuildVllmOutputs(Qwen(), hf.specs, {2, 2, 0, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(VllmLayoutTest, Fp8ScalesAreSlicedByBlocks) {
  // A fused trainer layout through the sender's FP8 rules, then the vLLM
  // layout for tp 2: I = 256, so I_tp = 128 (one scale row per rank).
  constexpr int64_t E = 3, I = 256, H = 130;
  Tensors fused;
  fused.Add({"model.layers.0.mlp.experts.gate_up_proj", DType::kF32, {E, 2 * I, H}},
            Iota(E * 2 * I * H, 0));
  fused.Add({"model.layers.0.mlp.experts.down_proj", DType::kF32, {E, H, I}}, Iota(E * H * I, 7));
  FormatSpec spec;
  spec.source = SourceLayout::kFused;
  spec.quant = QuantMethod::kFp8Block;
  auto wire = BuildOutputs(spec, Qwen(), fused.specs);
  ASSERT_TRUE(wire.ok()) << wire.status();
  Tensors hf = Materialize(*wire, fused);
  const std::string p = "model.layers.0.mlp.experts";
  auto outs = BuildVllmOutputs(Qwen(), hf.specs, {1, 2, 0, 1});
  ASSERT_TRUE(outs.ok()) << outs.status();
  Tensors v = Materialize(*outs, hf);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& o : *outs) shapes[o.spec.name] = o.spec.shape;
  EXPECT_EQ(shapes[p + ".w13_weight"], (std::vector<int64_t>{E, 256, H}));
  EXPECT_EQ(shapes[p + ".w13_weight_scale_inv"], (std::vector<int64_t>{E, 2, 2}));
  EXPECT_EQ(shapes[p + ".w2_weight_scale_inv"], (std::vector<int64_t>{E, 2, 1}));
  for (int e = 0; e < E; ++e) {
    const auto& gs = hf.Of(absl::StrCat(p, ".", e, ".gate_proj.weight_scale_inv"));  // [2, 2]
    const auto& us = hf.Of(absl::StrCat(p, ".", e, ".up_proj.weight_scale_inv"));
    const auto& ds = hf.Of(absl::StrCat(p, ".", e, ".down_proj.weight_scale_inv"));  // [2, 2]
    const auto& s13 = v.Of(p + ".w13_weight_scale_inv");
    const auto& s2 = v.Of(p + ".w2_weight_scale_inv");
    for (int c = 0; c < 2; ++c) {
      EXPECT_EQ(At(s13, (e * 2 + 0) * 2 + c), At(gs, 1 * 2 + c));  // gate block row 1
      EXPECT_EQ(At(s13, (e * 2 + 1) * 2 + c), At(us, 1 * 2 + c));  // up block row 1
      EXPECT_EQ(At(s2, (e * 2 + c) * 1 + 0), At(ds, c * 2 + 1));   // down block column 1
    }
  }
  // tp 4 would cut blocks (I_tp = 64): refused.
  auto bad = BuildVllmOutputs(Qwen(), hf.specs, {0, 4, 0, 1});
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("I_tp % 128"), std::string::npos);
}

TEST(VllmLayoutTest, AnFp8FusedWireGivesTheSameTensorsAsThePerExpertWire) {
  // The same FP8 experts on the wire as hf-fused (gate_up_proj and its
  // [E, 2*ceil(I/128), ceil(H/128)] scales) and as hf (per-expert keys):
  // every rank's w13, w2 and scales are equal byte for byte.
  constexpr int64_t E = 3, I = 256, H = 130;
  Tensors fused;
  fused.Add({"model.layers.0.mlp.experts.gate_up_proj", DType::kF32, {E, 2 * I, H}},
            Iota(E * 2 * I * H, -40000));
  fused.Add({"model.layers.0.mlp.experts.down_proj", DType::kF32, {E, H, I}}, Iota(E * H * I, 9));
  FormatSpec spec;
  spec.source = SourceLayout::kFused;
  spec.quant = QuantMethod::kFp8Block;
  auto per_wire = BuildOutputs(spec, Qwen(), fused.specs);
  spec.target = TargetFormat::kHfFused;
  auto fused_wire = BuildOutputs(spec, Qwen(), fused.specs);
  ASSERT_TRUE(per_wire.ok() && fused_wire.ok());
  Tensors per = Materialize(*per_wire, fused), fu = Materialize(*fused_wire, fused);
  ASSERT_EQ(fu.specs.size(), 4u);  // gate_up_proj, down_proj and their scales
  for (auto [tr, tp, er, ep] : {std::tuple{0, 1, 0, 1}, {1, 2, 0, 1}, {0, 2, 1, 2}, {0, 1, 2, 3}}) {
    SCOPED_TRACE(testing::Message() << "tp " << tr << "/" << tp << " ep " << er << "/" << ep);
    auto a = BuildVllmOutputs(Qwen(), per.specs, {tr, tp, er, ep});
    auto b = BuildVllmOutputs(Qwen(), fu.specs, {tr, tp, er, ep});
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    Tensors va = Materialize(*a, per), vb = Materialize(*b, fu);
    ASSERT_EQ(va.specs, vb.specs);
    EXPECT_EQ(va.specs.size(), 4u);
    for (size_t i = 0; i < va.specs.size(); ++i) EXPECT_EQ(va.data[i], vb.data[i]) << va.specs[i].name;
  }
}

TEST(VllmLayoutTest, RefusesAHalfFusedBlockNamingTheTensor) {
  Tensors t;
  t.Add({"model.layers.0.mlp.experts.gate_up_proj", DType::kF32, {2, 8, 4}}, Iota(64, 0));
  auto r = BuildVllmOutputs(Qwen(), t.specs, {0, 1, 0, 1});
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("'model.layers.0.mlp.experts.down_proj': missing"),
            std::string::npos)
      << r.status();
  t.Add({"model.layers.0.mlp.experts.0.gate_proj.weight", DType::kF32, {4, 4}}, Iota(16, 0));
  r = BuildVllmOutputs(Qwen(), t.specs, {0, 1, 0, 1});
  EXPECT_NE(r.status().message().find("both per-expert and fused"), std::string::npos) << r.status();
}

TEST(VllmLayoutTest, RefusesMoreExpertParallelRanksThanExperts) {
  Tensors t;
  t.Add({"model.layers.0.mlp.experts.gate_up_proj", DType::kF32, {2, 8, 4}}, Iota(64, 0));
  t.Add({"model.layers.0.mlp.experts.down_proj", DType::kF32, {2, 4, 4}}, Iota(32, 0));
  EXPECT_TRUE(BuildVllmOutputs(Qwen(), t.specs, {0, 1, 1, 2}).ok());
  auto r = BuildVllmOutputs(Qwen(), t.specs, {0, 1, 2, 3});
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("expert-parallel size 3 exceeds the 2 experts of "
                                      "model.layers.0.mlp.experts"),
            std::string::npos)
      << r.status();
}

}  // namespace
}  // namespace weightcast
