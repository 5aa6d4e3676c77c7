#include "common/secret.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

#include "gtest/gtest.h"

namespace weightcast {
namespace {

std::string TokenFile(const std::string& name, const std::string& text, mode_t mode) {
  const char* t = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(t != nullptr ? t : "/tmp") + "/" + name;
  std::ofstream(path) << text;
  chmod(path.c_str(), mode);
  return path;
}

TEST(SecretTest, ReadsATokenFromAPrivateFileOrTheEnvironment) {
  EXPECT_EQ(ReadToken(TokenFile("tok", "s3cret\n", 0600)).value(), "s3cret");
  EXPECT_EQ(ReadToken(TokenFile("tok-group", "s3cret", 0640)).value(), "s3cret");
  setenv(kTokenEnv, "from-env", 1);
  EXPECT_EQ(ReadToken("").value(), "from-env");
  unsetenv(kTokenEnv);
  EXPECT_EQ(ReadToken("").value(), "");
}

TEST(SecretTest, RefusesAWorldReadableMissingOrOddFile) {
  const std::string open = TokenFile("tok-open", "s3cret", 0644);
  auto r = ReadToken(open);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(open + ": readable by every user"), std::string::npos);
  EXPECT_FALSE(ReadToken("/nonexistent/token").ok());
  EXPECT_FALSE(ReadToken(TokenFile("tok-ctl", "a\x01" "b", 0600)).ok());
}

TEST(SecretTest, ComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

}  // namespace
}  // namespace weightcast
