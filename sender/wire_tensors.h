// What one sender puts on the wire for an update: its output tensors (the
// registered sources through the family's layout rules and optional FP8)
// and the config.json that travels with them.
#ifndef WEIGHTCAST_SENDER_WIRE_TENSORS_H_
#define WEIGHTCAST_SENDER_WIRE_TENSORS_H_

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/output_tensor.h"
#include "formats/format_spec.h"

namespace weightcast {

struct WireTensors {
  std::vector<OutputTensor> outputs;
  std::string config_json;
};

// INVALID_ARGUMENT naming the tensor when the sources do not fit the family.
[[nodiscard]] absl::StatusOr<WireTensors> BuildWireTensors(const FormatSpec& spec,
                                                           std::span<const TensorSpec> sources,
                                                           const std::string& config_json);

}  // namespace weightcast

#endif  // WEIGHTCAST_SENDER_WIRE_TENSORS_H_
