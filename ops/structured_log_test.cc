#include "ops/structured_log.h"

#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include "gtest/gtest.h"

namespace weightcast {
namespace {

class StructuredLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", sink));
  }
  void TearDown() override { ASSERT_TRUE(ConfigureLogging("info", "text").ok()); }
  std::ostringstream out_;
};

TEST_F(StructuredLogTest, JsonLinesCarryTheEventAndItsFields) {
  ASSERT_TRUE(ConfigureLogging("debug", "json").ok());
  LogEvent(spdlog::level::info, "update_committed",
           {{"rank", 1}, {"version", 7}, {"bytes", 1024}, {"seconds", 0.5},
            {"reason", "a \"quoted\" word"}});
  spdlog::warn("plain {}", "message");
  std::istringstream lines(out_.str());
  std::string line;
  ASSERT_TRUE(std::getline(lines, line));
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["event"], "update_committed");
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["rank"], 1);
  EXPECT_EQ(j["version"], 7);
  EXPECT_EQ(j["bytes"], 1024);
  EXPECT_DOUBLE_EQ(j["seconds"].get<double>(), 0.5);
  EXPECT_EQ(j["reason"], "a \"quoted\" word");
  EXPECT_TRUE(j["ts"].is_string());
  ASSERT_TRUE(std::getline(lines, line));
  j = nlohmann::json::parse(line);
  EXPECT_EQ(j["msg"], "plain message");
  EXPECT_EQ(j["level"], "warning");
}

TEST_F(StructuredLogTest, TextLinesAreKeyValuePairs) {
  EXPECT_EQ(FormatEventText("update_failed", {{"rank", 0}, {"code", "ABORTED"},
                                              {"reason", "sender 1 stopped"}}),
            "update_failed rank=0 code=ABORTED reason=\"sender 1 stopped\"");
  ASSERT_TRUE(ConfigureLogging("info", "text").ok());
  LogEvent(spdlog::level::debug, "hidden", {});
  LogEvent(spdlog::level::info, "shown", {{"version", 3}});
  EXPECT_EQ(out_.str().find("hidden"), std::string::npos);
  EXPECT_NE(out_.str().find("] [info] shown version=3"), std::string::npos) << out_.str();
}

TEST_F(StructuredLogTest, ABadLevelOrFormatIsRefusedAndChangesNothing) {
  ASSERT_TRUE(ConfigureLogging("warn", "text").ok());
  auto s = ConfigureLogging("bogus", "text");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'bogus'"), std::string::npos);
  s = ConfigureLogging("info", "xml");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'xml'"), std::string::npos);
  EXPECT_EQ(spdlog::get_level(), spdlog::level::warn);
}

}  // namespace
}  // namespace weightcast
