// Group tokens: read from a file or the environment (never a command line,
// which every local user sees in ps), compared in constant time.
#ifndef WEIGHTCAST_COMMON_SECRET_H_
#define WEIGHTCAST_COMMON_SECRET_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace weightcast {

// The environment variable a token is read from when no file is given.
inline constexpr char kTokenEnv[] = "WEIGHTCAST_TOKEN";

// The token: the contents of `file` (one trailing newline dropped) when
// non-empty, else $`env` (default $WEIGHTCAST_TOKEN), else "".
// INVALID_ARGUMENT naming the file when it cannot be read, is readable by
// others than its owner and group (a secret must not be), or holds control
// characters.
[[nodiscard]] absl::StatusOr<std::string> ReadToken(const std::string& file,
                                                    const char* env = kTokenEnv);

// The whole contents of a secret file (a TLS private key): refused like
// ReadToken's file when unreadable or readable by every user.
[[nodiscard]] absl::StatusOr<std::string> ReadSecretFile(const std::string& file);

// a == b, in time that depends on the lengths only.
[[nodiscard]] bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_SECRET_H_
