// The vLLM FusedMoE kernel layout, assembled by each receiver for its own
// tensor-parallel and expert-parallel rank from the hf (per-expert) tensors
// on the wire (FORMATS.md §1):
//   <P>.w13_weight [E_local, 2*I_tp, H]: per local expert, gate rows
//       [r*I_tp, (r+1)*I_tp) then up rows [r*I_tp, (r+1)*I_tp)
//   <P>.w2_weight  [E_local, H, I_tp]:   down_proj columns [r*I_tp, (r+1)*I_tp)
// (P = "<layer>.<block>.experts"). Experts are placed linearly: with ep
// ranks, base = E / ep and the first E % ep ranks own one more. Block FP8
// weights keep their dtype and get
//   <P>.w13_weight_scale_inv [E_local, 2*ceil(I_tp/128), ceil(H/128)]
//   <P>.w2_weight_scale_inv  [E_local, ceil(H/128), ceil(I_tp/128)]
// which needs I_tp % 128 == 0. Every other tensor passes through whole
// (vLLM's weight loaders shard attention and dense layers themselves).
#ifndef WEIGHTCAST_FORMATS_VLLM_LAYOUT_H_
#define WEIGHTCAST_FORMATS_VLLM_LAYOUT_H_

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/output_tensor.h"
#include "formats/families.h"

namespace weightcast {

struct VllmRank {
  int tp_rank = 0, tp_size = 1;
  int ep_rank = 0, ep_size = 1;
};

// INVALID_ARGUMENT for ranks out of range, I not divisible by tp_size, FP8
// with I_tp % 128 != 0, or an incomplete expert set (naming the tensor).
[[nodiscard]] absl::StatusOr<std::vector<OutputTensor>> BuildVllmOutputs(
    const FamilyRules& family, std::span<const TensorSpec> received, const VllmRank& rank);

// The experts [first, first + count) rank `ep_rank` of `ep_size` owns.
[[nodiscard]] std::pair<int64_t, int64_t> LocalExperts(int64_t num_experts, int ep_rank,
                                                        int ep_size);

}  // namespace weightcast

#endif  // WEIGHTCAST_FORMATS_VLLM_LAYOUT_H_
