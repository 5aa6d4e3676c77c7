#include "formats/format_spec.h"

#include "absl/strings/str_cat.h"
#include "formats/families.h"

namespace weightcast {

absl::StatusOr<FormatSpec> ParseFormatOptions(const FormatOptionsText& t) {
  FormatSpec s;
  if (!t.family.empty()) {
    absl::StatusOr<const FamilyRules*> f = FindFamily(t.family);
    if (!f.ok()) return absl::InvalidArgumentError(absl::StrCat("format.family: ", f.status().message()));
    s.family = t.family;
  }
  if (t.source_layout.empty() || t.source_layout == "per-expert") {
    s.source = SourceLayout::kPerExpert;
  } else if (t.source_layout == "fused") {
    s.source = SourceLayout::kFused;
  } else if (t.source_layout == "stacked") {
    s.source = SourceLayout::kStacked;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "format.source_layout: '", t.source_layout, "' (expected per-expert, fused or stacked)"));
  }
  if (t.target.empty() || t.target == "hf") {
    s.target = TargetFormat::kHf;
  } else if (t.target == "hf-fused") {
    s.target = TargetFormat::kHfFused;
  } else if (t.target == "vllm") {
    return absl::InvalidArgumentError(
        "format.target: 'vllm' is assembled by each receiver for its TP/EP rank; senders send "
        "'hf' (the default)");
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("format.target: '", t.target, "' (expected hf or hf-fused)"));
  }
  if (t.quant_method.empty() || t.quant_method == "none") {
    s.quant = QuantMethod::kNone;
  } else if (t.quant_method == "fp8-block") {
    s.quant = QuantMethod::kFp8Block;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "format.quantization.method: '", t.quant_method, "' (expected none or fp8-block)"));
  }
  if (t.scale_rule.empty() || t.scale_rule == "amax-clamp") {
    s.fp8.rule = Fp8ScaleRule::kAmaxClamp;
  } else if (t.scale_rule == "scale-clamp") {
    s.fp8.rule = Fp8ScaleRule::kScaleClamp;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "format.quantization.scale_rule: '", t.scale_rule,
        "' (expected amax-clamp or scale-clamp)"));
  }
  s.fp8.power_of_two = t.power_of_two_scales;
  if (s.quant == QuantMethod::kNone && (!t.scale_rule.empty() || t.power_of_two_scales)) {
    return absl::InvalidArgumentError(
        "format.quantization: scale options given without method fp8-block");
  }
  return s;
}

}  // namespace weightcast
