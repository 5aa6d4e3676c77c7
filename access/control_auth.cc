#include "access/control_auth.h"

#include <grpcpp/server_context.h>

#include "access/control_listener.h"
#include "common/secret.h"

namespace weightcast {

ControlAuth ControlAuth::ByPeer(const ControlListener* listener) {
  ControlAuth a;
  a.listener_ = listener;
  return a;
}

ControlAuth ControlAuth::ByToken(std::string token) {
  ControlAuth a;
  a.token_ = std::move(token);
  return a;
}

absl::StatusOr<std::optional<PeerCredentials>> ControlAuth::Authorize(
    const grpc::ServerContextBase& ctx) const {
  if (listener_ != nullptr) {
    std::optional<PeerCredentials> peer = listener_->PeerOf(ctx);
    if (!peer.has_value()) {
      return absl::PermissionDeniedError("the control socket did not admit this connection");
    }
    return peer;
  }
  const auto& md = ctx.client_metadata();
  auto it = md.find(kControlAuthMetadataKey);
  const std::string_view prefix = kBearerPrefix;
  if (token_.empty() || it == md.end() || it->second.size() < prefix.size() ||
      std::string_view(it->second.data(), prefix.size()) != prefix ||
      !ConstantTimeEquals(std::string_view(it->second.data() + prefix.size(),
                                           it->second.size() - prefix.size()),
                          token_)) {
    return absl::UnauthenticatedError(
        "missing or wrong control token (send 'authorization: Bearer TOKEN'; weightcastctl "
        "reads it from --control-token-file or $WEIGHTCAST_CONTROL_TOKEN)");
  }
  return std::optional<PeerCredentials>();
}

}  // namespace weightcast
