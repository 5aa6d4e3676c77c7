// config.json as registration, checkpoint directories and manifests bring
// it: validated, then rewritten for the receivers (quantization modules,
// the families' config rewrites), the path that crashed on deep nesting.
// Property: a config that validates is rewritten without crashing, and
// what the rewrite produces validates too.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/config_json.h"
#include "formats/format_spec.h"
#include "formats/layout.h"
#include "fuzz/fuzz_check.h"

using namespace weightcast;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (!ValidateConfigJson(text, "fuzz").ok()) return 0;
  for (const char* quant : {"none", "fp8-block"}) {
    FormatOptionsText opts;
    opts.quant_method = quant;
    absl::StatusOr<FormatSpec> spec = ParseFormatOptions(opts);
    if (!spec.ok()) continue;
    absl::StatusOr<std::string> out = RewriteConfig(*spec, text, {});
    if (out.ok()) FUZZ_CHECK(ValidateConfigJson(*out, "rewritten").ok());
    const TensorSpec tensors[] = {{"model.layers.0.mlp.gate_proj.weight", DType::kBF16, {4, 4}},
                                  {"model.layers.0.mlp.up_proj.weight", DType::kF8E4M3, {4, 4}}};
    absl::StatusOr<std::string> q = SetQuantizationModules(text, tensors);
    if (q.ok()) FUZZ_CHECK(ValidateConfigJson(*q, "quantized").ok());
  }
  return 0;
}
