// Logging set up once per process (--log-level, --log-format) and the
// structured lines operators grep and ship: one per update phase, each
// "EVENT key=value ..." in text, one JSON object per line in json
// ({"ts", "level", "event", fields...}; other messages as {"ts", "level",
// "msg"}).
#ifndef WEIGHTCAST_OPS_STRUCTURED_LOG_H_
#define WEIGHTCAST_OPS_STRUCTURED_LOG_H_

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/status/status.h"

namespace weightcast {

inline constexpr char kLogLevels[] = "trace, debug, info, warn, error";
inline constexpr char kLogFormats[] = "text, json";

// INVALID_ARGUMENT naming the value when `level` or `format` is not one of
// the above; nothing changes then.
[[nodiscard]] absl::Status ConfigureLogging(const std::string& level, const std::string& format);

using LogField = std::pair<std::string_view, nlohmann::json>;
// One structured line at `level`.
void LogEvent(spdlog::level::level_enum level, std::string_view event,
              std::initializer_list<LogField> fields);

// The text rendering of a structured line (what LogEvent writes in text).
[[nodiscard]] std::string FormatEventText(std::string_view event,
                                          std::initializer_list<LogField> fields);

}  // namespace weightcast

#endif  // WEIGHTCAST_OPS_STRUCTURED_LOG_H_
