// FormatSpec: what the sender puts on the wire: the trainer's expert layout,
// the target layout and the quantization, parsed from the control service's
// FormatOptions strings.
#ifndef WEIGHTCAST_FORMATS_FORMAT_SPEC_H_
#define WEIGHTCAST_FORMATS_FORMAT_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/output_tensor.h"

namespace weightcast {

enum class SourceLayout { kPerExpert, kFused, kStacked };
enum class TargetFormat { kHf, kHfFused };
enum class QuantMethod { kNone, kFp8Block };

// The options as proto/weightcast/v1/control.proto's FormatOptions spells them.
struct FormatOptionsText {
  std::string family;
  std::string source_layout;
  std::string target;
  std::string quant_method;
  std::string scale_rule;
  bool power_of_two_scales = false;
  friend bool operator==(const FormatOptionsText&, const FormatOptionsText&) = default;
};

struct FormatSpec {
  std::string family;  // empty: from config.json's model_type at update time
  SourceLayout source = SourceLayout::kPerExpert;
  TargetFormat target = TargetFormat::kHf;
  QuantMethod quant = QuantMethod::kNone;
  Fp8Options fp8;
  friend bool operator==(const FormatSpec&, const FormatSpec&) = default;
};

// Empty strings take the defaults (per-expert, hf, none, amax-clamp).
// INVALID_ARGUMENT naming the field for anything unknown, and for families
// the project does not support (e.g. gpt_oss), so that nothing is ever sent
// in a wrong layout.
[[nodiscard]] absl::StatusOr<FormatSpec> ParseFormatOptions(const FormatOptionsText& text);

}  // namespace weightcast

#endif  // WEIGHTCAST_FORMATS_FORMAT_SPEC_H_
