#include "formats/families.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace weightcast {
namespace {

// Never quantized, in every family: embeddings, the output head, every norm,
// the routers and their bias (FORMATS.md §2), and the MTP layer's eh_proj
// and shared_head.head, which vLLM's MTP models build unquantized.
const std::vector<std::string> kCommonSkip = {
    "embed_tokens", "lm_head", "norm", "mlp.gate.weight", "e_score_correction_bias",
    "shared_expert_gate", "router", "eh_proj", "shared_head.head"};

// A family whose experts sit under "mlp" with gate_proj/up_proj/down_proj
// keys and whose in-memory layout is the plain fused one (qwen3_moe's rules).
FamilyRules QwenLike(std::string model_type) {
  return FamilyRules{.model_type = std::move(model_type), .moe = true, .block = "mlp",
                     .fp8_skip = kCommonSkip};
}

FamilyRules Dense(std::string model_type) {
  return FamilyRules{.model_type = std::move(model_type), .fp8_skip = kCommonSkip};
}

FamilyRules Mixtral(std::string model_type, std::vector<Rename> renames) {
  return FamilyRules{.model_type = std::move(model_type), .moe = true,
                     .block = "block_sparse_moe", .gate = "w1", .up = "w3", .down = "w2",
                     .fused_block = "mlp", .renames = std::move(renames),
                     .fp8_skip = kCommonSkip};
}

FamilyRules Llama4(std::string model_type) {
  return FamilyRules{.model_type = std::move(model_type), .moe = true, .block = "feed_forward",
                     .fused_transposed = true, .hf_is_fused = true, .fp8_skip = kCommonSkip};
}

const std::vector<FamilyRules>& Table() {
  static const std::vector<FamilyRules> table = [] {
    std::vector<FamilyRules> t;
    for (const char* q : {"qwen2_moe", "qwen3_moe", "qwen3_next", "qwen3_5_moe",
                          "qwen3_5_moe_text", "deepseek_v2", "deepseek_v3", "deepseek_v32",
                          "kimi_k2", "glm4_moe", "glm4_moe_lite", "olmoe"}) {
      t.push_back(QwenLike(q));
    }
    // Ernie-4.5 keeps its router's bias under the gate in memory only.
    FamilyRules ernie = QwenLike("ernie4_5_moe");
    ernie.renames = {{".mlp.gate.moe_statics.", ".mlp.moe_statics."}};
    t.push_back(ernie);
    t.push_back(Mixtral("mixtral", {{".mlp.gate.", ".block_sparse_moe.gate."}}));
    t.push_back(Mixtral("minimax_m2", {{".mlp.gate.", ".block_sparse_moe.gate."},
                                       {".mlp.e_score_correction_bias",
                                        ".block_sparse_moe.e_score_correction_bias"}}));
    t.push_back(Llama4("llama4"));
    t.push_back(Llama4("llama4_text"));
    // Granite-MoE checkpoints are fused under other names.
    t.push_back(FamilyRules{
        .model_type = "granitemoe", .moe = true, .block = "block_sparse_moe",
        .hf_is_fused = true,
        .renames = {{".block_sparse_moe.experts.gate_up_proj", ".block_sparse_moe.input_linear.weight"},
                    {".block_sparse_moe.experts.down_proj", ".block_sparse_moe.output_linear.weight"},
                    {".block_sparse_moe.router.weight", ".block_sparse_moe.router.layer.weight"}},
        .fp8_skip = kCommonSkip});
    t.push_back(FamilyRules{.model_type = "gpt_oss", .moe = true, .block = "mlp",
                            .fused_transposed = true, .gate_up_interleaved = true,
                            .expert_biases = true, .hf_is_fused = true,
                            .fp8_skip = kCommonSkip});
    for (const char* d : {"dense", "llama", "mistral", "qwen2", "qwen3"}) t.push_back(Dense(d));
    return t;
  }();
  return table;
}

std::string Apply(const std::vector<Rename>& renames, const std::string& name, bool to_checkpoint) {
  std::string out = name;
  for (const Rename& r : renames) {
    const std::string& from = to_checkpoint ? r.in_memory : r.checkpoint;
    const std::string& to = to_checkpoint ? r.checkpoint : r.in_memory;
    const size_t at = out.rfind(from);
    if (at != std::string::npos) out.replace(at, from.size(), to);
  }
  return out;
}

}  // namespace

std::string ToCheckpointName(const FamilyRules& f, const std::string& name) {
  return Apply(f.renames, name, /*to_checkpoint=*/true);
}

std::string ToInMemoryName(const FamilyRules& f, const std::string& name) {
  return Apply(f.renames, name, /*to_checkpoint=*/false);
}

absl::StatusOr<const FamilyRules*> FindFamily(const std::string& model_type) {
  for (const FamilyRules& f : Table()) {
    if (f.model_type == model_type) return &f;
  }
  return absl::InvalidArgumentError(absl::StrCat("family '", model_type,
                                                 "' is not supported (supported: ",
                                                 absl::StrJoin(SupportedFamilies(), ", "), ")"));
}

std::vector<std::string> SupportedFamilies() {
  std::vector<std::string> out;
  for (const FamilyRules& f : Table()) out.push_back(f.model_type);
  return out;
}

}  // namespace weightcast
