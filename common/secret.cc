#include "common/secret.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace weightcast {

absl::StatusOr<std::string> ReadSecretFile(const std::string& file) {
  struct stat st;
  if (stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not a readable regular file"));
  }
  if (st.st_mode & S_IROTH) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": readable by every user; a secret must not be (chmod o-r)"));
  }
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return absl::InvalidArgumentError(absl::StrCat(file, ": cannot read"));
  return text.str();
}

absl::StatusOr<std::string> ReadToken(const std::string& file, const char* env) {
  if (file.empty()) {
    const char* value = std::getenv(env);
    return std::string(value != nullptr ? value : "");
  }
  absl::StatusOr<std::string> text = ReadSecretFile(file);
  if (!text.ok()) return text.status();
  std::string token = *std::move(text);
  if (!token.empty() && token.back() == '\n') token.pop_back();
  for (char c : token) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": the token holds control characters"));
    }
  }
  return token;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  volatile unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace weightcast
