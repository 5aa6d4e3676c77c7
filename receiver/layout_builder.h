// LayoutBuilder: a receiver-side layout, as the outputs (common/output_tensor.h)
// a rank makes of the tensors on the wire. The sources of the outputs index
// the manifest's tensors, in its order; received tensors no output reads
// (experts another EP rank owns) are dropped. Used by TransformingSink (into
// a checkpoint) and ParameterSink (into an engine's parameters).
#ifndef WEIGHTCAST_RECEIVER_LAYOUT_BUILDER_H_
#define WEIGHTCAST_RECEIVER_LAYOUT_BUILDER_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/output_tensor.h"
#include "formats/vllm_layout.h"
#include "protocol/wire_format.h"

namespace weightcast {

using LayoutBuilder =
    std::function<absl::StatusOr<std::vector<OutputTensor>>(const GlobalManifest& manifest)>;

// The vLLM FusedMoE layout of `rank` (formats/vllm_layout.h); the family
// comes from `family` or else the manifest's config.json.
[[nodiscard]] LayoutBuilder VllmLayoutBuilder(std::string family, VllmRank rank);

// Every received tensor as itself.
[[nodiscard]] absl::StatusOr<std::vector<OutputTensor>> IdentityLayout(
    const GlobalManifest& manifest);

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_LAYOUT_BUILDER_H_
