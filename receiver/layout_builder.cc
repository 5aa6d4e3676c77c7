#include "receiver/layout_builder.h"

#include "common/status_macros.h"
#include "formats/layout.h"

namespace weightcast {

LayoutBuilder VllmLayoutBuilder(std::string family, VllmRank rank) {
  return [family, rank](const GlobalManifest& m) -> absl::StatusOr<std::vector<OutputTensor>> {
    std::vector<TensorSpec> specs;
    for (const ManifestTensor& t : m.tensors) specs.push_back(t.spec);
    FormatSpec spec;
    spec.family = family;
    ASSIGN_OR_RETURN(const FamilyRules* f, ResolveFamily(spec, m.config_json, specs));
    return BuildVllmOutputs(*f, specs, rank);
  };
}

absl::StatusOr<std::vector<OutputTensor>> IdentityLayout(const GlobalManifest& manifest) {
  std::vector<OutputTensor> out;
  out.reserve(manifest.tensors.size());
  for (size_t i = 0; i < manifest.tensors.size(); ++i) {
    out.push_back(CopyOf(manifest.tensors[i].spec, static_cast<uint32_t>(i)));
  }
  return out;
}

}  // namespace weightcast
