#include "common/config_json.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace weightcast {

int JsonNestingDepth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return deepest;
}

absl::Status ValidateConfigJson(std::string_view text, const std::string& what) {
  if (text.size() > kMaxConfigJsonBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", text.size(),
                                                   " bytes, more than the ",
                                                   kMaxConfigJsonBytes, " a config may have"));
  }
  if (const int depth = JsonNestingDepth(text); depth > kMaxConfigJsonDepth) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": nested ", depth,
                                                   " levels deep, more than the ",
                                                   kMaxConfigJsonDepth, " allowed"));
  }
  const nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a JSON object"));
  }
  return absl::OkStatus();
}

}  // namespace weightcast
