#include "sender/server.h"

#include <unistd.h>

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_listen.h"
#include "sender/broadcaster_service.h"

namespace weightcast {
namespace {

bool IsUnix(const std::string& listen) { return absl::StartsWith(listen, "unix:"); }

}  // namespace

absl::Status ValidateServerOptions(const ServerOptions& options) {
  const std::string& listen = options.listen;
  const bool tls = !options.tls_cert_pem.empty() || !options.tls_key_pem.empty();
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    return absl::InvalidArgumentError("TLS needs both a certificate and its private key");
  }
  if (IsUnix(listen)) {
    if (listen.size() <= 5) return absl::InvalidArgumentError("listen: empty unix socket path");
    if (tls) {
      return absl::InvalidArgumentError(
          "listen: TLS is for TCP; a unix socket is guarded by its peers' credentials");
    }
    return absl::OkStatus();
  }
  const size_t colon = listen.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen: '", listen, "' is not unix:PATH or HOST:PORT"));
  }
  if (options.control_group.has_value()) {
    return absl::InvalidArgumentError(
        "a control group admits local users to a unix socket; TCP callers use the token");
  }
  if (options.control_token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen: '", listen, "' is TCP, where any local user could connect: give a control "
        "token (--control-token-file or $", kControlTokenEnv, "), or listen on unix:PATH"));
  }
  const std::string host = listen.substr(0, colon);
  const bool local = host == "127.0.0.1" || host == "localhost" || host == "[::1]";
  if (!local && !options.allow_remote) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen: '", listen,
        "' is not a loopback address; pass --allow-remote to listen on it"));
  }
  if (!local && !tls) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen: '", listen, "' is reachable from other hosts: it needs TLS (--tls-cert and "
        "--tls-key), or the token would cross the network in the clear"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Server>> Server::BuildAndStart(const ServerOptions& options) {
  if (absl::Status s = ValidateServerOptions(options); !s.ok()) return s;
  std::unique_ptr<Server> server(new Server());
  server->core_ = std::make_unique<Broadcaster>();
  const bool unix_socket = IsUnix(options.listen);
  if (!unix_socket) server->auth_ = ControlAuth::ByToken(options.control_token);
  server->service_ = std::make_unique<BroadcasterService>(server->core_.get(), &server->auth_);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  DisablePortSharing(builder);
  int port = 0;
  if (!unix_socket) {
    std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
    if (!options.tls_cert_pem.empty()) {
      grpc::SslServerCredentialsOptions ssl;
      ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
      creds = grpc::SslServerCredentials(ssl);
    }
    builder.AddListeningPort(options.listen, creds, &port);
  }
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(kMaxControlMessageBytes);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || (port == 0 && !unix_socket)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "cannot listen on ", options.listen, " (in use, or not an address of this host)"));
  }
  if (unix_socket) {
    absl::StatusOr<std::unique_ptr<ControlListener>> l = ControlListener::Start(
        {.path = options.listen.substr(5),
         .policy = {.owner_uid = geteuid(), .group = options.control_group}},
        server->server_.get());
    if (!l.ok()) return l.status();
    server->listener_ = *std::move(l);
    server->auth_ = ControlAuth::ByPeer(server->listener_.get());
    server->address_ = options.listen;
  } else {
    server->address_ =
        absl::StrCat(options.listen.substr(0, options.listen.rfind(':')), ":", port);
  }
  Server* self = server.get();
  self->server_->GetHealthCheckService()->SetServingStatus(false);
  self->health_ = std::thread([self] {
    absl::MutexLock lock(&self->health_mu_);
    bool serving = false;
    while (!self->stopping_) {
      const bool now = NotServingReason(self->core_->GetStatus()).empty();
      if (now != serving) {
        self->server_->GetHealthCheckService()->SetServingStatus(now);
        serving = now;
      }
      self->health_mu_.AwaitWithTimeout(absl::Condition(&self->stopping_), absl::Milliseconds(200));
    }
  });
  return server;
}

Server::~Server() { Shutdown(absl::Seconds(1)); }

void Server::Shutdown(absl::Duration grace) {
  if (server_ == nullptr) return;
  {
    absl::MutexLock lock(&health_mu_);
    stopping_ = true;
  }
  if (health_.joinable()) health_.join();
  listener_.reset();  // no new connections
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
