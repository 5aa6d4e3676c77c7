// config.json as weightcast accepts it from outside (a trainer's
// registration, a checkpoint directory, a peer's manifest): a JSON object of
// bounded size and nesting, checked before any parser or writer recurses
// into it.
#ifndef WEIGHTCAST_COMMON_CONFIG_JSON_H_
#define WEIGHTCAST_COMMON_CONFIG_JSON_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace weightcast {

inline constexpr size_t kMaxConfigJsonBytes = size_t{16} << 20;
// Real configs nest 3-4 levels (text_config.rope_scaling...).
inline constexpr int kMaxConfigJsonDepth = 64;

// The deepest nesting of [ and { outside strings, found without recursion
// (what to check before handing text to a parser that recurses).
[[nodiscard]] int JsonNestingDepth(std::string_view text);

// OK for a JSON object within the limits; INVALID_ARGUMENT naming `what`
// (e.g. "config_json", a file path) otherwise. Empty is not an object.
[[nodiscard]] absl::Status ValidateConfigJson(std::string_view text, const std::string& what);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CONFIG_JSON_H_
