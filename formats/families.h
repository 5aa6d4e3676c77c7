// The rule tables, one per model family, in one place: how each family names
// its routed experts, and what block FP8 must leave alone. Every layout
// transform and FP8 naming decision reads these rules; nothing else matches
// tensor names.
#ifndef WEIGHTCAST_FORMATS_FAMILIES_H_
#define WEIGHTCAST_FORMATS_FAMILIES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace weightcast {

struct FamilyRules {
  std::string model_type;         // config.json model_type
  bool moe = false;               // has routed experts
  // Routed experts live under "<prefix>.<block>.experts." ("mlp",
  // "block_sparse_moe", "feed_forward"); anchoring on the block keeps
  // "shared_experts." out.
  std::string block;
  // Per-expert key names of the gate, up and down projections.
  std::string gate, up, down;
  // Llama-4: fused gate_up_proj is [E, H, 2I] and down_proj [E, I, H]
  // (transposed); everyone else [E, 2I, H] and [E, H, I].
  bool fused_transposed = false;
  // The block's name in transformers 5's in-memory (fused) layout when it
  // differs from the checkpoint's: Mixtral is "mlp" in memory and
  // "block_sparse_moe" on disk (its router moves with it). Empty: same.
  std::string fused_block;
  // The family's checkpoints keep experts fused (Llama-4): target "hf" is
  // then the fused layout.
  bool hf_is_fused = false;
  // Substrings of tensor names that block FP8 never quantizes, besides
  // 1-D tensors and biases (common to all families).
  std::vector<std::string> fp8_skip;
};

// The rules of `model_type`; INVALID_ARGUMENT naming it when the project does
// not support it (e.g. "gpt_oss": interleaved gate/up with biases).
[[nodiscard]] absl::StatusOr<const FamilyRules*> FindFamily(const std::string& model_type);

// Every supported model_type, for messages and tests.
[[nodiscard]] std::vector<std::string> SupportedFamilies();

}  // namespace weightcast

#endif  // WEIGHTCAST_FORMATS_FAMILIES_H_
