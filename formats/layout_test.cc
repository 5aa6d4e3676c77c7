#include "formats/layout.h"

#include <map>
#include <numeric>

#include "gtest/gtest.h"
#include "kernels/pack_reference.h"

namespace weightcast {
namespace {

// A set of source tensors with distinct float values (element i of tensor t
// is t * 1e6 + i), packed through the layout rules.
struct Model {
  std::vector<TensorSpec> specs;
  std::vector<std::vector<float>> data;

  void Add(const std::string& name, std::vector<int64_t> shape) {
    specs.push_back(TensorSpec{name, DType::kF32, shape});
    data.emplace_back(specs.back().NumElements());
    std::iota(data.back().begin(), data.back().end(), float(data.size() * 1000000));
  }
  std::vector<HostSource> Sources() const {
    std::vector<HostSource> s;
    for (size_t i = 0; i < specs.size(); ++i) {
      s.push_back({specs[i], reinterpret_cast<const std::byte*>(data[i].data())});
    }
    return s;
  }
  const std::vector<float>& Of(const std::string& name) const {
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i].name == name) return data[i];
    }
    ADD_FAILURE() << "no " << name;
    return data[0];
  }
};

// Packs every output whole: name -> bytes.
std::map<std::string, std::vector<std::byte>> PackAll(const std::vector<OutputTensor>& outs,
                                                      const Model& m) {
  std::map<std::string, std::vector<std::byte>> r;
  auto src = m.Sources();
  for (const OutputTensor& o : outs) {
    EXPECT_TRUE(ValidateOutputTensor(o, m.specs).ok()) << o.spec.name;
    std::vector<std::byte> b(o.spec.ByteSize());
    EXPECT_TRUE(PackOutputRange(o, src, 0, b.size(), b.data()).ok()) << o.spec.name;
    r[o.spec.name] = std::move(b);
  }
  return r;
}

std::vector<float> Floats(const std::vector<std::byte>& b) {
  std::vector<float> f(b.size() / 4);
  std::memcpy(f.data(), b.data(), b.size());
  return f;
}

FormatSpec Spec(SourceLayout s, TargetFormat t, QuantMethod q = QuantMethod::kNone) {
  FormatSpec f;
  f.source = s;
  f.target = t;
  f.quant = q;
  return f;
}

const FamilyRules& Family(const std::string& name) { return **FindFamily(name); }

constexpr int64_t E = 3, I = 5, H = 7;

Model Fused(const std::string& prefix, bool transposed) {
  Model m;
  m.Add("model.embed_tokens.weight", {11, H});
  if (transposed) {
    m.Add(prefix + ".experts.gate_up_proj", {E, H, 2 * I});
    m.Add(prefix + ".experts.down_proj", {E, I, H});
  } else {
    m.Add(prefix + ".experts.gate_up_proj", {E, 2 * I, H});
    m.Add(prefix + ".experts.down_proj", {E, H, I});
  }
  m.Add("model.norm.weight", {H});
  return m;
}

TEST(LayoutTest, FusedExpandsToPerExpertAndFusesBackByteForByte) {
  const Model fused = Fused("model.layers.0.mlp", false);
  auto outs = BuildOutputs(Spec(SourceLayout::kFused, TargetFormat::kHf), Family("qwen3_moe"),
                           fused.specs);
  ASSERT_TRUE(outs.ok()) << outs.status();
  ASSERT_EQ(outs->size(), 2 + 3 * E);
  EXPECT_EQ((*outs)[0].spec.name, "model.embed_tokens.weight");
  EXPECT_EQ((*outs)[1].spec.name, "model.layers.0.mlp.experts.0.gate_proj.weight");
  EXPECT_EQ(outs->back().spec.name, "model.norm.weight");
  auto packed = PackAll(*outs, fused);
  const auto& gu = fused.Of("model.layers.0.mlp.experts.gate_up_proj");
  const auto& dn = fused.Of("model.layers.0.mlp.experts.down_proj");
  for (int e = 0; e < E; ++e) {
    auto gate = Floats(packed["model.layers.0.mlp.experts." + std::to_string(e) + ".gate_proj.weight"]);
    auto up = Floats(packed["model.layers.0.mlp.experts." + std::to_string(e) + ".up_proj.weight"]);
    auto down = Floats(packed["model.layers.0.mlp.experts." + std::to_string(e) + ".down_proj.weight"]);
    for (int i = 0; i < I; ++i) {
      for (int h = 0; h < H; ++h) {
        EXPECT_EQ(gate[i * H + h], gu[(e * 2 * I + i) * H + h]);       // chunk(2, dim=1)[0]
        EXPECT_EQ(up[i * H + h], gu[(e * 2 * I + I + i) * H + h]);     // chunk(2, dim=1)[1]
        EXPECT_EQ(down[h * I + i], dn[(e * H + h) * I + i]);
      }
    }
  }
  // Per-expert back to fused: the original bytes.
  Model per;
  for (const OutputTensor& o : *outs) {
    per.specs.push_back(TensorSpec{o.spec.name, DType::kF32, o.spec.shape});
    per.data.push_back(Floats(packed[o.spec.name]));
  }
  auto back = BuildOutputs(Spec(SourceLayout::kPerExpert, TargetFormat::kHfFused),
                           Family("qwen3_moe"), per.specs);
  ASSERT_TRUE(back.ok()) << back.status();
  auto refused = PackAll(*back, per);
  EXPECT_EQ(Floats(refused["model.layers.0.mlp.experts.gate_up_proj"]), gu);
  EXPECT_EQ(Floats(refused["model.layers.0.mlp.experts.down_proj"]), dn);
}

TEST(LayoutTest, StackedW1W2W3Expand) {
  Model m;
  m.Add("model.layers.3.block_sparse_moe.experts.w1", {E, I, H});
  m.Add("model.layers.3.block_sparse_moe.experts.w2", {E, H, I});
  m.Add("model.layers.3.block_sparse_moe.experts.w3", {E, I, H});
  auto outs = BuildOutputs(Spec(SourceLayout::kStacked, TargetFormat::kHf), Family("mixtral"),
                           m.specs);
  ASSERT_TRUE(outs.ok()) << outs.status();
  auto packed = PackAll(*outs, m);
  ASSERT_EQ(packed.size(), 3u * E);
  const auto& w1 = m.Of("model.layers.3.block_sparse_moe.experts.w1");
  const auto& w3 = m.Of("model.layers.3.block_sparse_moe.experts.w3");
  auto g2 = Floats(packed["model.layers.3.block_sparse_moe.experts.2.w1.weight"]);
  auto u1 = Floats(packed["model.layers.3.block_sparse_moe.experts.1.w3.weight"]);
  EXPECT_EQ(std::vector<float>(w1.begin() + 2 * I * H, w1.begin() + 3 * I * H), g2);
  EXPECT_EQ(std::vector<float>(w3.begin() + I * H, w3.begin() + 2 * I * H), u1);
  EXPECT_EQ(packed["model.layers.3.block_sparse_moe.experts.0.w2.weight"].size(), H * I * 4u);
}

TEST(LayoutTest, Llama4KeepsItsTransposedFusedLayout) {
  // Llama-4 checkpoints keep experts fused as [E, H, 2I] / [E, I, H]:
  // "hf" is that layout, so a fused trainer's tensors go out unchanged...
  const Model fused = Fused("language_model.model.layers.1.feed_forward", true);
  const std::string p = "language_model.model.layers.1.feed_forward.experts.";
  auto same = BuildOutputs(Spec(SourceLayout::kFused, TargetFormat::kHf), Family("llama4"),
                           fused.specs);
  ASSERT_TRUE(same.ok()) << same.status();
  auto packed_same = PackAll(*same, fused);
  EXPECT_EQ(Floats(packed_same[p + "gate_up_proj"]), fused.Of(p + "gate_up_proj"));
  // ...and per-expert tensors are fused into it: row h of expert e is
  // column h of gate_e then column h of up_e; down is transposed.
  Model per;
  for (int e = 0; e < E; ++e) {
    per.Add(p + std::to_string(e) + ".gate_proj.weight", {I, H});
    per.Add(p + std::to_string(e) + ".up_proj.weight", {I, H});
    per.Add(p + std::to_string(e) + ".down_proj.weight", {H, I});
  }
  auto outs = BuildOutputs(Spec(SourceLayout::kPerExpert, TargetFormat::kHf), Family("llama4"),
                           per.specs);
  ASSERT_TRUE(outs.ok()) << outs.status();
  ASSERT_EQ(outs->size(), 2u);
  EXPECT_EQ((*outs)[0].spec.shape, (std::vector<int64_t>{E, H, 2 * I}));
  EXPECT_EQ((*outs)[1].spec.shape, (std::vector<int64_t>{E, I, H}));
  auto packed = PackAll(*outs, per);
  auto gu = Floats(packed[p + "gate_up_proj"]);
  auto dn = Floats(packed[p + "down_proj"]);
  for (int e = 0; e < E; ++e) {
    const auto& gate = per.Of(p + std::to_string(e) + ".gate_proj.weight");
    const auto& up = per.Of(p + std::to_string(e) + ".up_proj.weight");
    const auto& down = per.Of(p + std::to_string(e) + ".down_proj.weight");
    for (int i = 0; i < I; ++i) {
      for (int h = 0; h < H; ++h) {
        EXPECT_EQ(gu[(e * H + h) * 2 * I + i], gate[i * H + h]);
        EXPECT_EQ(gu[(e * H + h) * 2 * I + I + i], up[i * H + h]);
        EXPECT_EQ(dn[(e * I + i) * H + h], down[h * I + i]);
      }
    }
  }
}

TEST(LayoutTest, MixtralRenamesItsBlockBetweenMemoryAndCheckpoint) {
  // transformers 5 holds Mixtral's experts under "mlp"; checkpoints use
  // "block_sparse_moe" with w1/w3/w2, and the router moves with them.
  Model m;
  m.Add("model.layers.0.mlp.gate.weight", {E, H});
  m.Add("model.layers.0.mlp.experts.gate_up_proj", {E, 2 * I, H});
  m.Add("model.layers.0.mlp.experts.down_proj", {E, H, I});
  auto outs = BuildOutputs(Spec(SourceLayout::kFused, TargetFormat::kHf), Family("mixtral"),
                           m.specs);
  ASSERT_TRUE(outs.ok()) << outs.status();
  std::vector<std::string> names;
  for (const auto& o : *outs) names.push_back(o.spec.name);
  EXPECT_EQ(names.front(), "model.layers.0.block_sparse_moe.gate.weight");
  EXPECT_EQ(names[1], "model.layers.0.block_sparse_moe.experts.0.w1.weight");
  EXPECT_EQ(names[2], "model.layers.0.block_sparse_moe.experts.0.w3.weight");
  EXPECT_EQ(names[3], "model.layers.0.block_sparse_moe.experts.0.w2.weight");
  // And back to the in-memory naming.
  Model per;
  for (const OutputTensor& o : *outs) per.Add(o.spec.name, o.spec.shape);
  auto back = BuildOutputs(Spec(SourceLayout::kPerExpert, TargetFormat::kHfFused),
                           Family("mixtral"), per.specs);
  ASSERT_TRUE(back.ok()) << back.status();
  std::vector<std::string> back_names;
  for (const auto& o : *back) back_names.push_back(o.spec.name);
  EXPECT_EQ(back_names, (std::vector<std::string>{"model.layers.0.mlp.gate.weight",
                                                  "model.layers.0.mlp.experts.gate_up_proj",
                                                  "model.layers.0.mlp.experts.down_proj"}));
}

// DeepSeek-V3 names: MLA projections, shared experts (which must never be
// taken for routed ones), the router and its bias, a dense first layer.
Model DeepSeekV3() {
  Model m;
  m.Add("model.embed_tokens.weight", {11, H});
  m.Add("model.layers.0.self_attn.kv_a_proj_with_mqa.weight", {9, H});
  m.Add("model.layers.0.self_attn.kv_a_layernorm.weight", {9});
  m.Add("model.layers.0.self_attn.kv_b_proj.weight", {12, 9});
  m.Add("model.layers.0.mlp.gate_proj.weight", {13, H});  // dense layer
  m.Add("model.layers.1.mlp.gate.weight", {E, H});
  m.Add("model.layers.1.mlp.gate.e_score_correction_bias", {E});
  m.Add("model.layers.1.mlp.shared_experts.gate_proj.weight", {I, H});
  m.Add("model.layers.1.mlp.experts.gate_up_proj", {E, 2 * I, H});
  m.Add("model.layers.1.mlp.experts.down_proj", {E, H, I});
  m.Add("model.layers.1.post_attention_layernorm.weight", {H});
  m.Add("lm_head.weight", {11, H});
  return m;
}

TEST(LayoutTest, Fp8NamesShapesAndSkipRules) {
  Model m = DeepSeekV3();
  auto outs = BuildOutputs(Spec(SourceLayout::kFused, TargetFormat::kHf, QuantMethod::kFp8Block),
                           Family("deepseek_v3"), m.specs);
  ASSERT_TRUE(outs.ok()) << outs.status();
  std::map<std::string, const OutputTensor*> by;
  for (const auto& o : *outs) by[o.spec.name] = &o;
  auto dtype = [&](const std::string& n) { return by.count(n) ? by[n]->spec.dtype : DType::kBool; };
  // Quantized, with scales named and shaped as DeepSeek-V3 checkpoints have them.
  for (const std::string n :
       {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", "model.layers.0.self_attn.kv_b_proj.weight",
        "model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.shared_experts.gate_proj.weight",
        "model.layers.1.mlp.experts.2.down_proj.weight"}) {
    EXPECT_EQ(dtype(n), DType::kF8E4M3) << n;
    ASSERT_TRUE(by.count(n + "_scale_inv")) << n;
    EXPECT_EQ(by[n + "_scale_inv"]->spec.dtype, DType::kF32);
  }
  EXPECT_EQ(by["model.layers.1.mlp.experts.2.down_proj.weight_scale_inv"]->spec.shape,
            (std::vector<int64_t>{1, 1}));
  // Never quantized.
  for (const std::string n :
       {"model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight",
        "model.layers.1.mlp.gate.e_score_correction_bias",
        "model.layers.0.self_attn.kv_a_layernorm.weight",
        "model.layers.1.post_attention_layernorm.weight"}) {
    EXPECT_EQ(dtype(n), DType::kF32) << n;
    EXPECT_FALSE(by.count(n + "_scale_inv")) << n;
  }
  // The shared expert was not taken for a routed one.
  EXPECT_FALSE(by.count("model.layers.1.mlp.shared_experts.0.gate_proj.weight"));
  auto cfg = RewriteConfig(Spec(SourceLayout::kFused, TargetFormat::kHf, QuantMethod::kFp8Block),
                           R"({"model_type":"deepseek_v3"})", *outs);
  ASSERT_TRUE(cfg.ok());
  for (const char* want : {"\"quant_method\": \"fp8\"", "\"weight_block_size\": [\n      128,\n      128\n    ]",
                           "\"modules_to_not_convert\"", "\"ignored_layers\"", "\"lm_head\"",
                           "\"model.layers.1.mlp.gate\"", "\"activation_scheme\": \"dynamic\""}) {
    EXPECT_NE(cfg->find(want), std::string::npos) << want << " in " << *cfg;
  }
}

TEST(LayoutTest, FusedFp8KeepsGateAndUpBlocksApart) {
  Model m;
  m.Add("model.layers.0.mlp.experts.gate_up_proj", {E, 2 * 130, 300});
  m.Add("model.layers.0.mlp.experts.down_proj", {E, 300, 130});
  auto outs = BuildOutputs(Spec(SourceLayout::kFused, TargetFormat::kHfFused, QuantMethod::kFp8Block),
                           Family("qwen3_moe"), m.specs);
  ASSERT_TRUE(outs.ok()) << outs.status();
  ASSERT_EQ(outs->size(), 4u);
  EXPECT_EQ((*outs)[1].spec.name, "model.layers.0.mlp.experts.gate_up_proj_scale_inv");
  EXPECT_EQ((*outs)[1].spec.shape, (std::vector<int64_t>{E, 2 * 2, 3}));  // 2*ceil(130/128)
  EXPECT_EQ((*outs)[3].spec.shape, (std::vector<int64_t>{E, 3, 2}));
}

TEST(LayoutTest, RefusesMismatchedSourcesNamingTheTensor) {
  const auto& q = Family("qwen3_moe");
  auto expect = [](const absl::StatusOr<std::vector<OutputTensor>>& r, const std::string& needle) {
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status();
  };
  Model fused = Fused("model.layers.0.mlp", false);
  expect(BuildOutputs(Spec(SourceLayout::kPerExpert, TargetFormat::kHf), q, fused.specs),
         "'model.layers.0.mlp.experts.gate_up_proj': is in the fused layout");
  Model per;
  for (int e = 0; e < 3; ++e) {
    if (e == 1) continue;  // a missing expert
    for (const char* p : {"gate_proj", "up_proj"}) {
      per.Add("model.layers.0.mlp.experts." + std::to_string(e) + "." + p + ".weight", {I, H});
    }
    per.Add("model.layers.0.mlp.experts." + std::to_string(e) + ".down_proj.weight", {H, I});
  }
  expect(BuildOutputs(Spec(SourceLayout::kPerExpert, TargetFormat::kHfFused), q, per.specs),
         "model.layers.0.mlp.experts.1.gate_proj.weight");
  Model bad_shape = Fused("model.layers.0.mlp", false);
  bad_shape.specs[2].shape = {E, H, I + 1};
  expect(BuildOutputs(Spec(SourceLayout::kFused, TargetFormat::kHf), q, bad_shape.specs),
         "'model.layers.0.mlp.experts.down_proj': down_proj should be [3x7x5]");
  EXPECT_EQ(FindFamily("dbrx").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(FindFamily("dbrx").status().message().find("gpt_oss"), std::string::npos)
      << "the message lists the supported families";
  // gpt_oss's interleaved experts have no per-expert or stacked form.
  expect(BuildOutputs(Spec(SourceLayout::kPerExpert, TargetFormat::kHf), Family("gpt_oss"),
                      per.specs),
         "'model.layers.0.mlp.experts': gpt_oss's experts exist only in the fused layout");
  FormatSpec unknown;
  auto r = ResolveFamily(unknown, "", per.specs);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("family is unknown"), std::string::npos);
  auto from_config = ResolveFamily(unknown, R"({"model_type":"glm4_moe"})", per.specs);
  ASSERT_TRUE(from_config.ok());
  EXPECT_EQ((*from_config)->model_type, "glm4_moe");
}

TEST(LayoutTest, Fp8LeavesTheMtpLayersProjectionAndHeadUnquantized) {
  // DeepSeek-V3's MTP layer (model.layers.<num_hidden_layers>): vLLM builds
  // eh_proj and shared_head.head unquantized; its other weights are FP8.
  Model m;
  const std::string mtp = "model.layers.3.";
  for (const char* n : {"eh_proj.weight", "shared_head.head.weight", "self_attn.o_proj.weight",
                        "mlp.shared_experts.down_proj.weight"}) {
    m.Add(mtp + n, {256, 256});
  }
  m.Add(mtp + "enorm.weight", {256});
  m.Add(mtp + "shared_head.norm.weight", {256});
  auto outs = BuildOutputs(Spec(SourceLayout::kPerExpert, TargetFormat::kHf, QuantMethod::kFp8Block),
                           Family("deepseek_v3"), m.specs);
  ASSERT_TRUE(outs.ok()) << outs.status();
  std::map<std::string, DType> got;
  for (const OutputTensor& o : *outs) got[o.spec.name] = o.spec.dtype;
  EXPECT_EQ(got[mtp + "eh_proj.weight"], DType::kF32);
  EXPECT_EQ(got[mtp + "shared_head.head.weight"], DType::kF32);
  EXPECT_EQ(got[mtp + "self_attn.o_proj.weight"], DType::kF8E4M3);
  EXPECT_EQ(got[mtp + "mlp.shared_experts.down_proj.weight"], DType::kF8E4M3);
  EXPECT_FALSE(got.count(mtp + "eh_proj.weight_scale_inv"));
}

// Found by fuzz/config_json_fuzz: a config.json (a peer's manifest carries
// one) whose quant_method is not a string made nlohmann's value() throw out
// of SetQuantizationModules, ending the receiver. It is left as it is.
TEST(LayoutTest, SetQuantizationModulesIgnoresANonStringQuantMethod) {
  const std::vector<TensorSpec> specs = {{.name = "lm_head.weight", .dtype = DType::kBF16,
                                          .shape = {4, 4}}};
  for (const std::string config : {R"({"quantization_config": {"quant_method": 8}})",
                                   R"({"quantization_config": {"quant_method": null}})",
                                   R"({"quantization_config": {"quant_method": ["fp8"]}})",
                                   R"({"quantization_config": {}})"}) {
    absl::StatusOr<std::string> out = SetQuantizationModules(config, specs);
    ASSERT_TRUE(out.ok()) << config << ": " << out.status();
    EXPECT_EQ(*out, config);
  }
  absl::StatusOr<std::string> fp8 =
      SetQuantizationModules(R"({"quantization_config": {"quant_method": "fp8"}})", specs);
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  EXPECT_NE(fp8->find(R"("modules_to_not_convert": [
      "lm_head"
    ])"), std::string::npos) << *fp8;
}

TEST(LayoutTest, ParsesTheControlServiceStrings) {
  EXPECT_TRUE(ParseFormatOptions({}).ok());
  auto s = ParseFormatOptions({.family = "mixtral", .source_layout = "stacked", .target = "hf-fused",
                               .quant_method = "fp8-block", .scale_rule = "scale-clamp",
                               .power_of_two_scales = true});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->source, SourceLayout::kStacked);
  EXPECT_EQ(s->fp8.rule, Fp8ScaleRule::kScaleClamp);
  EXPECT_TRUE(s->fp8.power_of_two);
  for (FormatOptionsText bad : {FormatOptionsText{.family = "dbrx"},
                                FormatOptionsText{.source_layout = "zigzag"},
                                FormatOptionsText{.target = "vllm"},
                                FormatOptionsText{.quant_method = "int4"},
                                FormatOptionsText{.scale_rule = "amax-clamp"}}) {
    EXPECT_EQ(ParseFormatOptions(bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace weightcast
