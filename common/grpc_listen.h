// Listening without sharing: every gRPC server weightcast starts owns its
// address alone. gRPC would otherwise share a TCP port with a second server
// (SO_REUSEPORT: calls split between two daemons) and replace a unix socket
// a live daemon listens on (orphaning it).
#ifndef WEIGHTCAST_COMMON_GRPC_LISTEN_H_
#define WEIGHTCAST_COMMON_GRPC_LISTEN_H_

#include <string>

#include <grpcpp/server_builder.h>

#include "absl/status/status.h"

namespace weightcast {

// Before listening on `address` ("unix:PATH" or "HOST:PORT"): for a unix
// socket path that exists, ALREADY_EXISTS when a process accepts
// connections on it, INVALID_ARGUMENT when it is not a socket; a stale
// socket (nobody listening) is removed. TCP addresses need nothing here.
[[nodiscard]] absl::Status ClaimListenAddress(const std::string& address);

// Turns SO_REUSEPORT off for the builder's ports.
void DisablePortSharing(grpc::ServerBuilder& builder);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_GRPC_LISTEN_H_
