#include "ops/structured_log.h"

#include <atomic>
#include <chrono>
#include <memory>

#include <spdlog/formatter.h>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace weightcast {
namespace {

std::atomic<bool> g_json{false};
// Marks a message that LogEvent made as a JSON object of fields.
constexpr char kFieldsMark = '\x1e';

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    nlohmann::json line = nlohmann::json::object();
    line["ts"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::FromChrono(msg.time),
                                  absl::UTCTimeZone());
    line["level"] = std::string(spdlog::level::to_string_view(msg.level).data(),
                                spdlog::level::to_string_view(msg.level).size());
    if (!payload.empty() && payload.front() == kFieldsMark) {
      nlohmann::json fields =
          nlohmann::json::parse(payload.substr(1), nullptr, /*allow_exceptions=*/false);
      if (fields.is_object()) {
        line.update(fields);
      } else {
        line["msg"] = std::string(payload.substr(1));
      }
    } else {
      line["msg"] = std::string(payload);
    }
    // Replacement, not an exception, for bytes that are not UTF-8.
    const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

std::string TextValue(const nlohmann::json& v) {
  if (!v.is_string()) return v.dump();
  const std::string& s = v.get_ref<const std::string&>();
  const bool plain = !s.empty() && s.find_first_of(" \"=\t\n") == std::string::npos;
  return plain ? s : v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

absl::Status ConfigureLogging(const std::string& level, const std::string& format) {
  spdlog::level::level_enum l;
  if (level == "trace") {
    l = spdlog::level::trace;
  } else if (level == "debug") {
    l = spdlog::level::debug;
  } else if (level == "info") {
    l = spdlog::level::info;
  } else if (level == "warn") {
    l = spdlog::level::warn;
  } else if (level == "error") {
    l = spdlog::level::err;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-level '", level, "': must be one of ", kLogLevels));
  }
  if (format != "text" && format != "json") {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format '", format, "': must be one of ", kLogFormats));
  }
  spdlog::set_level(l);
  g_json = format == "json";
  if (g_json) {
    spdlog::set_formatter(std::make_unique<JsonFormatter>());
  } else {
    spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  }
  return absl::OkStatus();
}

std::string FormatEventText(std::string_view event, std::initializer_list<LogField> fields) {
  std::string out(event);
  for (const auto& [k, v] : fields) {
    out += " ";
    out += k;
    out += "=";
    out += TextValue(v);
  }
  return out;
}

void LogEvent(spdlog::level::level_enum level, std::string_view event,
              std::initializer_list<LogField> fields) {
  if (!spdlog::should_log(level)) return;
  if (!g_json) {
    spdlog::log(level, "{}", FormatEventText(event, fields));
    return;
  }
  nlohmann::json obj = nlohmann::json::object();
  obj["event"] = std::string(event);
  for (const auto& [k, v] : fields) obj[std::string(k)] = v;
  spdlog::log(level, "{}{}", kFieldsMark,
              obj.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace weightcast
