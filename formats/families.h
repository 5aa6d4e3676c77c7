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

// One substring a family's tensor names spell differently in transformers 5's
// in-memory (fused) naming and in its checkpoints.
struct Rename {
  std::string in_memory, checkpoint;
};

struct FamilyRules {
  std::string model_type;  // config.json model_type
  bool moe = false;        // has routed experts
  // Routed experts live under "<prefix>.<block>.experts." ("mlp",
  // "block_sparse_moe", "feed_forward"); anchoring on the block keeps
  // "shared_experts." out.
  std::string block;
  // Per-expert key names of the gate, up and down projections.
  std::string gate = "gate_proj", up = "up_proj", down = "down_proj";
  // Llama-4 and gpt_oss: fused gate_up_proj is [E, H, 2I] and down_proj
  // [E, I, H] (transposed); everyone else [E, 2I, H] and [E, H, I].
  bool fused_transposed = false;
  // gpt_oss: gate and up alternate along gate_up_proj's 2I axis (gate at
  // even, up at odd positions) instead of all gates then all ups; its
  // experts also carry biases "<P>.gate_up_proj_bias" [E, 2I] and
  // "<P>.down_proj_bias" [E, H], which travel with them.
  bool gate_up_interleaved = false;
  bool expert_biases = false;
  // The block's name in transformers 5's in-memory (fused) layout when it
  // differs from the checkpoint's: Mixtral is "mlp" in memory and
  // "block_sparse_moe" on disk. Empty: same.
  std::string fused_block;
  // The family's checkpoints keep experts fused (Llama-4, granitemoe,
  // gpt_oss): target "hf" is then the fused layout, and per-expert keys do
  // not exist for it when the fused layout cannot be split into them.
  bool hf_is_fused = false;
  // Everything else the two namings spell differently (routers, biases,
  // granitemoe's fused experts), applied to whole tensor names in order.
  std::vector<Rename> renames;
  // Substrings of tensor names that block FP8 never quantizes, besides
  // 1-D tensors and biases (common to all families).
  std::vector<std::string> fp8_skip;
};

// `name` in the checkpoint's naming, and back: `renames` applied in order
// (expert tensor names are the layout's business, formats/layout.h).
[[nodiscard]] std::string ToCheckpointName(const FamilyRules& f, const std::string& name);
[[nodiscard]] std::string ToInMemoryName(const FamilyRules& f, const std::string& name);

// The rules of `model_type`; INVALID_ARGUMENT naming it when the project does
// not support it.
[[nodiscard]] absl::StatusOr<const FamilyRules*> FindFamily(const std::string& model_type);

// Every supported model_type, for messages and tests.
[[nodiscard]] std::vector<std::string> SupportedFamilies();

}  // namespace weightcast

#endif  // WEIGHTCAST_FORMATS_FAMILIES_H_
