#include "sender/server.h"

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_listen.h"
#include "sender/broadcaster_service.h"

namespace weightcast {

absl::Status ValidateListenAddress(const std::string& listen, bool allow_remote) {
  if (absl::StartsWith(listen, "unix:")) {
    if (listen.size() <= 5) return absl::InvalidArgumentError("listen: empty unix socket path");
    return absl::OkStatus();
  }
  const size_t colon = listen.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen: '", listen, "' is not unix:PATH or HOST:PORT"));
  }
  const std::string host = listen.substr(0, colon);
  const bool local = host == "127.0.0.1" || host == "localhost" || host == "[::1]";
  if (!local && !allow_remote) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen: '", listen,
        "' is not a loopback address; pass --allow-remote to listen on it"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Server>> Server::BuildAndStart(const ServerOptions& options) {
  if (absl::Status s = ValidateListenAddress(options.listen, options.allow_remote); !s.ok()) {
    return s;
  }
  std::unique_ptr<Server> server(new Server());
  server->core_ = std::make_unique<Broadcaster>();
  server->service_ = std::make_unique<BroadcasterService>(server->core_.get());
  if (absl::Status s = ClaimListenAddress(options.listen); !s.ok()) return s;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  DisablePortSharing(builder);
  int port = 0;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(kMaxControlMessageBytes);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || (port == 0 && !absl::StartsWith(options.listen, "unix:"))) {
    return absl::AlreadyExistsError(absl::StrCat(
        "cannot listen on ", options.listen, " (in use, or not an address of this host)"));
  }
  if (absl::StartsWith(options.listen, "unix:")) {
    server->address_ = options.listen;
  } else {
    server->address_ =
        absl::StrCat(options.listen.substr(0, options.listen.rfind(':')), ":", port);
  }
  return server;
}

Server::~Server() { Shutdown(absl::Seconds(1)); }

void Server::Shutdown(absl::Duration grace) {
  if (server_ == nullptr) return;
  // Abort first: a running Update handler would otherwise hold the
  // shutdown until its collective times out.
  core_->Abort();
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(grace));
  server_->Wait();
  server_.reset();
}

void Server::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace weightcast
