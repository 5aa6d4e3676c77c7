#include "formats/families.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace weightcast {
namespace {

// Never quantized, in every family: embeddings, the output head, every norm,
// the routers and their bias (FORMATS.md §2).
const std::vector<std::string> kCommonSkip = {
    "embed_tokens", "lm_head", "norm", "mlp.gate.weight", "e_score_correction_bias",
    "shared_expert_gate", "router"};

std::vector<std::string> With(std::vector<std::string> extra) {
  std::vector<std::string> all = kCommonSkip;
  all.insert(all.end(), extra.begin(), extra.end());
  return all;
}

const std::vector<FamilyRules>& Table() {
  static const std::vector<FamilyRules> table = {
      {"qwen2_moe", true, "mlp", "gate_proj", "up_proj", "down_proj", false, "", false, With({})},
      {"qwen3_moe", true, "mlp", "gate_proj", "up_proj", "down_proj", false, "", false, With({})},
      {"deepseek_v2", true, "mlp", "gate_proj", "up_proj", "down_proj", false, "", false, With({})},
      {"deepseek_v3", true, "mlp", "gate_proj", "up_proj", "down_proj", false, "", false, With({})},
      {"kimi_k2", true, "mlp", "gate_proj", "up_proj", "down_proj", false, "", false, With({})},
      {"glm4_moe", true, "mlp", "gate_proj", "up_proj", "down_proj", false, "", false, With({})},
      {"mixtral", true, "block_sparse_moe", "w1", "w3", "w2", false, "mlp", false, With({"block_sparse_moe.gate.weight"})},
      {"llama4", true, "feed_forward", "gate_proj", "up_proj", "down_proj", true, "", true, With({"feed_forward.router"})},
      {"llama4_text", true, "feed_forward", "gate_proj", "up_proj", "down_proj", true, "", true, With({"feed_forward.router"})},
      {"dense", false, "", "", "", "", false, "", false, With({})},
      {"llama", false, "", "", "", "", false, "", false, With({})},
      {"mistral", false, "", "", "", "", false, "", false, With({})},
      {"qwen2", false, "", "", "", "", false, "", false, With({})},
      {"qwen3", false, "", "", "", "", false, "", false, With({})},
  };
  return table;
}

}  // namespace

absl::StatusOr<const FamilyRules*> FindFamily(const std::string& model_type) {
  for (const FamilyRules& f : Table()) {
    if (f.model_type == model_type) return &f;
  }
  if (model_type == "gpt_oss") {
    return absl::InvalidArgumentError(
        "family 'gpt_oss' is not supported: its experts interleave gate/up columns and carry "
        "biases, which no rule here implements");
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
