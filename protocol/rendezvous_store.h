// The group's KeyValueStore over the gRPC rendezvous, and the factory that
// connects a GlooTransport for a generation through it.
#ifndef WEIGHTCAST_PROTOCOL_RENDEZVOUS_STORE_H_
#define WEIGHTCAST_PROTOCOL_RENDEZVOUS_STORE_H_

#include <memory>
#include <string>

#include "protocol/group.h"
#include "transport/rendezvous.h"

namespace weightcast {

class RendezvousKeyValueStore final : public KeyValueStore {
 public:
  RendezvousKeyValueStore(const std::string& address, const std::string& token)
      : client_(address, token) {}
  absl::Status Set(const std::string& key, const std::string& value) override {
    return client_.Set(key, value);
  }
  absl::StatusOr<std::string> Get(const std::string& key) override { return client_.Get(key); }
  absl::Status Wait(const std::vector<std::string>& keys, absl::Time deadline) override {
    return client_.Wait(keys, deadline);
  }
  absl::Status ErasePrefix(const std::string& prefix) override {
    return client_.ErasePrefix(prefix).status();
  }
  // Makes pending and later calls return CANCELLED (used by Abort).
  void Cancel() { client_.Cancel(); }

 private:
  RendezvousClient client_;
};

// Each call connects a GlooTransport under the generation's key prefix,
// through its own rendezvous client (gloo's connect blocks on it).
[[nodiscard]] TransportFactory MakeGlooTransportFactory(const std::string& address,
                                                        const std::string& token,
                                                        const std::string& bind_host);

}  // namespace weightcast

#endif  // WEIGHTCAST_PROTOCOL_RENDEZVOUS_STORE_H_
