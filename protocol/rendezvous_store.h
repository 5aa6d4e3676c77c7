// The group's KeyValueStore over the gRPC rendezvous, and the factory that
// connects a generation's transport (gloo or NCCL) through it.
#ifndef WEIGHTCAST_PROTOCOL_RENDEZVOUS_STORE_H_
#define WEIGHTCAST_PROTOCOL_RENDEZVOUS_STORE_H_

#include <memory>
#include <string>

#include "protocol/group.h"
#include "transport/rendezvous.h"

namespace weightcast {

class RendezvousKeyValueStore final : public KeyValueStore {
 public:
  // `call_timeout`: the longest any call without its own deadline waits
  // (senders and receivers pass their group timeout).
  RendezvousKeyValueStore(const std::string& address, const std::string& token,
                          absl::Duration call_timeout = RendezvousClient::kDefaultCallTimeout)
      : client_(address, token, nullptr, call_timeout) {}
  absl::Status Set(const std::string& key, const std::string& value,
                   absl::Time deadline = absl::InfiniteFuture()) override {
    return client_.Set(key, value, deadline);
  }
  absl::StatusOr<std::string> Get(const std::string& key,
                                  absl::Time deadline = absl::InfiniteFuture()) override {
    return client_.Get(key, deadline);
  }
  absl::Status Wait(const std::vector<std::string>& keys, absl::Time deadline) override {
    return client_.Wait(keys, deadline);
  }
  absl::Status ErasePrefix(const std::string& prefix) override {
    return client_.ErasePrefix(prefix).status();
  }
  absl::Status Erase(const std::vector<std::string>& keys,
                     absl::Time deadline = absl::InfiniteFuture()) override {
    return client_.Erase(keys, deadline).status();
  }
  // Makes pending and later calls return CANCELLED (used by Abort).
  void Cancel() { client_.Cancel(); }

 private:
  RendezvousClient client_;
};

// Where a rank's data plane lives.
struct DataPlaneOptions {
  std::string rendezvous_address;  // host:port of sender 0's rendezvous
  std::string token;
  std::string bind_host = "127.0.0.1";  // gloo's listening address
  int cuda_device = 0;                  // NCCL: this rank's GPU
};

// Connects the transport an announcement names, for one generation, through
// its own rendezvous client (connecting blocks on it):
// - "gloo": a GlooTransport under the generation's key prefix;
// - "nccl": rank 0 publishes a fresh NCCL unique id under the prefix, every
//   rank makes an NcclTransport on `cuda_device` with per-sender
//   sub-communicators (NCCL picks its interfaces from NCCL_SOCKET_IFNAME).
[[nodiscard]] TransportFactory MakeTransportFactory(const DataPlaneOptions& options);

}  // namespace weightcast

#endif  // WEIGHTCAST_PROTOCOL_RENDEZVOUS_STORE_H_
