// Server: owns one Broadcaster core, its gRPC service, the standard health
// service (NOT_SERVING while uninitialised or while the group is broken)
// and the grpc::Server. weightcastd's main only parses flags into
// ServerOptions and calls BuildAndStart.
//
// Who may call (access/):
//   unix:PATH (the default, access/control_listener.h): the daemon's own
//     user, root and the members of `control_group`, told apart by the
//     kernel's peer credentials; files they register are checked against
//     what they may read.
//   HOST:PORT: only with `control_token` (each call carries it as
//     "authorization: Bearer TOKEN"); off loopback also only with
//     allow_remote and TLS (tls_cert_pem, tls_key_pem).
#ifndef WEIGHTCAST_SENDER_SERVER_H_
#define WEIGHTCAST_SENDER_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "access/control_auth.h"
#include "access/control_listener.h"
#include "sender/broadcaster.h"

namespace grpc {
class Server;
}

namespace weightcast {

class BroadcasterService;

// The largest control request accepted: RegisterTensors of a model with a
// million tensors (a 1T-parameter MoE with per-expert keys) is ~150 MB.
// gRPC's default, 4 MiB, is ~30k tensors.
inline constexpr int kMaxControlMessageBytes = 512 << 20;

struct ServerOptions {
  // "unix:/path/to.sock", "127.0.0.1:PORT", "localhost:PORT", "[::1]:PORT";
  // any other host needs allow_remote.
  std::string listen = DefaultControlAddress();
  bool allow_remote = false;
  // unix: members of this group may use the daemon too (socket 0660).
  std::optional<gid_t> control_group;
  // TCP: the token every call must carry. Required for TCP.
  std::string control_token;
  // TCP: PEM certificate chain and private key. Required off loopback.
  std::string tls_cert_pem;
  std::string tls_key_pem;
};

// INVALID_ARGUMENT naming the option when `options` cannot be served
// safely: malformed listen address, TCP without a token, a remote address
// without allow_remote or without TLS, TLS half given or on a unix socket,
// a control group on TCP.
[[nodiscard]] absl::Status ValidateServerOptions(const ServerOptions& options);

class Server {
 public:
  // Listens on options.listen alone (common/grpc_listen.h): ALREADY_EXISTS
  // when another process holds the address, INVALID_ARGUMENT for a bad one.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Server>> BuildAndStart(
      const ServerOptions& options);
  ~Server();

  // Stops accepting calls, aborts a running update, waits up to `grace`.
  void Shutdown(absl::Duration grace);
  // Blocks until Shutdown.
  void Wait();

  [[nodiscard]] Broadcaster& core() { return *core_; }
  // The address clients use (with the chosen port when listen had port 0).
  [[nodiscard]] const std::string& address() const { return address_; }

 private:
  Server() = default;
  std::unique_ptr<Broadcaster> core_;
  ControlAuth auth_ = ControlAuth::ByToken("");
  std::unique_ptr<BroadcasterService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ControlListener> listener_;
  std::string address_;
  // Keeps the gRPC health service's status that of the core
  // (NotServingReason), polled 5 times a second.
  absl::Mutex health_mu_;
  bool stopping_ ABSL_GUARDED_BY(health_mu_) = false;
  std::thread health_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SENDER_SERVER_H_
