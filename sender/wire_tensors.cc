#include "sender/wire_tensors.h"

#include "common/status_macros.h"
#include "formats/layout.h"

namespace weightcast {

absl::StatusOr<WireTensors> BuildWireTensors(const FormatSpec& spec,
                                             std::span<const TensorSpec> sources,
                                             const std::string& config_json) {
  ASSIGN_OR_RETURN(const FamilyRules* family, ResolveFamily(spec, config_json, sources));
  WireTensors w;
  ASSIGN_OR_RETURN(w.outputs, BuildOutputs(spec, *family, sources));
  ASSIGN_OR_RETURN(w.config_json, RewriteConfig(spec, config_json, w.outputs));
  return w;
}

}  // namespace weightcast
