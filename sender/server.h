// Server: owns one Broadcaster core, its gRPC service, the standard health
// service and the grpc::Server. weightcastd's main only parses flags into
// ServerOptions and calls BuildAndStart.
#ifndef WEIGHTCAST_SENDER_SERVER_H_
#define WEIGHTCAST_SENDER_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
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
  // "unix:/path/to.sock", "127.0.0.1:PORT", "localhost:PORT", "[::1]:PORT".
  // Any other address needs allow_remote.
  std::string listen = "127.0.0.1:50151";
  bool allow_remote = false;
};

// INVALID_ARGUMENT when `listen` is malformed, or is not local and
// allow_remote is off.
[[nodiscard]] absl::Status ValidateListenAddress(const std::string& listen, bool allow_remote);

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
  std::unique_ptr<BroadcasterService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SENDER_SERVER_H_
