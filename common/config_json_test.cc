#include "common/config_json.h"

#include <string>

#include "gtest/gtest.h"

namespace weightcast {
namespace {

TEST(ConfigJsonTest, AcceptsObjectsWithinTheLimits) {
  EXPECT_TRUE(ValidateConfigJson(R"({"model_type": "qwen3_moe", "rope": {"a": [1, 2]}})", "c").ok());
  // Brackets inside strings, escaped quotes included, are not nesting.
  const std::string brackets(200, '[');
  EXPECT_TRUE(ValidateConfigJson(R"({"s": ")" + brackets + R"(\"[["})", "c").ok());
}

TEST(ConfigJsonTest, RefusesDeepNestingBeforeParsingIt) {
  // 20,000 levels used to crash weightcastd (a recursion in the JSON code).
  std::string deep = R"({"a":)" + std::string(20000, '[') + std::string(20000, ']') + "}";
  const absl::Status s = ValidateConfigJson(deep, "config_json");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "config_json: nested 20001 levels deep, more than the 64 allowed");
  std::string ok = R"({"a":)" + std::string(63, '[') + std::string(63, ']') + "}";
  EXPECT_TRUE(ValidateConfigJson(ok, "c").ok());
}

TEST(ConfigJsonTest, RefusesWhatIsNotAnObjectNamingTheSource) {
  for (const char* bad : {"", "[1]", "\"x\"", "{\"a\":", "nul"}) {
    const absl::Status s = ValidateConfigJson(bad, "ckpt/config.json");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(s.message(), "ckpt/config.json: not a JSON object") << bad;
  }
  EXPECT_FALSE(ValidateConfigJson(std::string(kMaxConfigJsonBytes + 1, ' '), "c").ok());
}

}  // namespace
}  // namespace weightcast
