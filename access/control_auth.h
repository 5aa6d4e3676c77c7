// ControlAuth: who a control call comes from, decided by the listener it
// came through. Every handler of the control service asks first.
//
//   unix socket: the peer's kernel credentials, admitted by ControlListener
//                (the caller is that user: files it registers are checked
//                against what it may read);
//   TCP:         "authorization: Bearer TOKEN" metadata, compared in
//                constant time (the caller holds the operator's token and
//                acts as the daemon's own user).
#ifndef WEIGHTCAST_ACCESS_CONTROL_AUTH_H_
#define WEIGHTCAST_ACCESS_CONTROL_AUTH_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "access/peer.h"

namespace grpc {
class ServerContextBase;
}

namespace weightcast {

class ControlListener;

// The metadata key a TCP caller's token travels in, and its value's prefix.
inline constexpr char kControlAuthMetadataKey[] = "authorization";
inline constexpr char kBearerPrefix[] = "Bearer ";
// Where clients and the daemon read the control token from when no file is
// given.
inline constexpr char kControlTokenEnv[] = "WEIGHTCAST_CONTROL_TOKEN";

class ControlAuth {
 public:
  [[nodiscard]] static ControlAuth ByPeer(const ControlListener* listener);
  // `token` must not be empty.
  [[nodiscard]] static ControlAuth ByToken(std::string token);

  // The caller's credentials (nullopt: a token holder). UNAUTHENTICATED for
  // a missing or wrong token; PERMISSION_DENIED for a call whose peer the
  // listener did not admit. Thread-safe.
  [[nodiscard]] absl::StatusOr<std::optional<PeerCredentials>> Authorize(
      const grpc::ServerContextBase& ctx) const;

 private:
  const ControlListener* listener_ = nullptr;
  std::string token_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_ACCESS_CONTROL_AUTH_H_
