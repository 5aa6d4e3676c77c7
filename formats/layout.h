// Layout transforms as addressing: maps a sender's registered source tensors
// to the tensors it puts on the wire (OutputTensors), per family rules.
//
//   source layout (what the trainer holds)      target (what goes out)
//   per-expert  P.experts.{e}.gate_proj.weight   hf:       per-expert keys
//   fused       P.experts.gate_up_proj [E,2I,H]  hf-fused: P.experts.gate_up_proj,
//               P.experts.down_proj    [E,H,I]             P.experts.down_proj
//   stacked     P.experts.w1/w3 [E,I,H], w2 [E,H,I]
// (P = "<layer prefix>.<block>", names per family; Llama-4's fused layout is
// transposed.) Optional block FP8 turns each quantizable weight into an
// F8_E4M3 tensor plus its f32 scales ("<name>.weight_scale_inv", or
// "<name>_scale_inv" for fused expert tensors). Fused gate_up is quantized
// as separate gate and up matrices per expert, so its scales are
// [E, 2*ceil(I/128), ceil(H/128)] as vLLM's w13 expects.
#ifndef WEIGHTCAST_FORMATS_LAYOUT_H_
#define WEIGHTCAST_FORMATS_LAYOUT_H_

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/output_tensor.h"
#include "formats/families.h"
#include "formats/format_spec.h"

namespace weightcast {

// The family to use: spec.family, else config.json's model_type, else
// "dense" when no tensor name contains ".experts.". INVALID_ARGUMENT
// otherwise, and for unsupported families.
[[nodiscard]] absl::StatusOr<const FamilyRules*> ResolveFamily(
    const FormatSpec& spec, const std::string& config_json,
    std::span<const TensorSpec> sources);

// The wire tensors, in source order (a block's experts where its first
// source tensor was). Checks the source set against the family before any
// byte moves: a tensor in another layout than spec.source, a missing
// expert or projection, inconsistent shapes or dtypes are INVALID_ARGUMENT
// naming the tensor.
[[nodiscard]] absl::StatusOr<std::vector<OutputTensor>> BuildOutputs(
    const FormatSpec& spec, const FamilyRules& family, std::span<const TensorSpec> sources);

// config.json for the wire: with block FP8, adds quantization_config
// (quant_method fp8, fmt e4m3, activation_scheme dynamic, weight_block_size
// [128, 128], and the modules left unquantized as both
// modules_to_not_convert and ignored_layers). Empty stays empty.
[[nodiscard]] absl::StatusOr<std::string> RewriteConfig(const FormatSpec& spec,
                                                        const std::string& config_json,
                                                        std::span<const OutputTensor> outputs);

// When `config_json` carries an fp8 quantization_config, sets its
// modules_to_not_convert and ignored_layers to the modules of `tensors`
// whose weight (2-D or more) is not F8_E4M3. Receivers call it with the
// whole group's tensors (each sender only knows its own). Otherwise
// returns the config unchanged.
[[nodiscard]] absl::StatusOr<std::string> SetQuantizationModules(
    const std::string& config_json, std::span<const TensorSpec> tensors);

}  // namespace weightcast

#endif  // WEIGHTCAST_FORMATS_LAYOUT_H_
