// ControlListener: a unix control socket whose connections are admitted by
// the kernel-reported credentials of the peer (SO_PEERCRED) before gRPC
// reads a byte of them. Admitted connections are handed to the daemon's
// gRPC server; the others to a small server of this class that answers
// every call PERMISSION_DENIED with the reason, and the refusal is logged.
//
//   auto server = builder.BuildAndStart();            // no listening ports
//   auto l = ControlListener::Start({.path = "/run/weightcast/d.sock",
//                                    .policy = {.owner_uid = geteuid()}},
//                                   server.get());
//   ... l->PeerOf(*ctx) in a handler: who is calling
//
// The socket file is 0600 (0660 and owned by the group when the policy
// names one): the file mode is the first fence, the credentials check the
// second (a socket a careless chmod opened to all is still closed).
#ifndef WEIGHTCAST_ACCESS_CONTROL_LISTENER_H_
#define WEIGHTCAST_ACCESS_CONTROL_LISTENER_H_

#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "access/peer.h"

namespace grpc {
class Server;
class ServerContextBase;
class CallbackGenericService;
}  // namespace grpc

namespace weightcast {

// The control address a daemon listens on, and its clients dial, when none
// is given: unix:DIR/weightcastd.sock, DIR being $RUNTIME_DIRECTORY (set by
// systemd's RuntimeDirectory=), else /run/weightcast for root, else
// $XDG_RUNTIME_DIR/weightcast, else /tmp/weightcast-UID.
[[nodiscard]] std::string DefaultControlAddress();

class ControlListener {
 public:
  struct Options {
    std::string path;  // the socket's path (no "unix:")
    ControlPolicy policy;
  };

  // Makes the socket's directory when missing (0700, or 0750 with the
  // policy's group), removes a stale socket (common/grpc_listen.h), binds,
  // listens and starts accepting. ALREADY_EXISTS when a live daemon holds
  // the path; INVALID_ARGUMENT for a path that is not usable.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ControlListener>> Start(
      const Options& options, grpc::Server* admitted);
  // Stops accepting and removes the socket file. Connections already handed
  // on belong to their servers.
  ~ControlListener();
  ControlListener(const ControlListener&) = delete;
  ControlListener& operator=(const ControlListener&) = delete;

  // The credentials of the peer behind a call on the admitted server;
  // nullopt for a call that did not come through this listener.
  // Thread-safe.
  [[nodiscard]] std::optional<PeerCredentials> PeerOf(const grpc::ServerContextBase& ctx) const;

 private:
  ControlListener() = default;
  void AcceptLoop();

  Options options_;
  grpc::Server* admitted_ = nullptr;
  std::unique_ptr<grpc::CallbackGenericService> deny_service_;
  std::unique_ptr<grpc::Server> denied_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::thread acceptor_;
  mutable absl::Mutex mu_;
  // Keyed by descriptor number, which gRPC names its peer by ("fd:N"); an
  // entry is overwritten when the number is reused by a new connection.
  absl::flat_hash_map<int, PeerCredentials> admitted_peers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int, std::string> refusals_ ABSL_GUARDED_BY(mu_);
};

}  // namespace weightcast

#endif  // WEIGHTCAST_ACCESS_CONTROL_LISTENER_H_
