#include "protocol/rendezvous_store.h"

#include "transport/gloo_transport.h"

namespace weightcast {

TransportFactory MakeGlooTransportFactory(const std::string& address, const std::string& token,
                                          const std::string& bind_host) {
  return [address, token, bind_host](uint64_t generation, int rank, int world_size,
                                     absl::Time deadline, const std::atomic<bool>& cancelled)
             -> absl::StatusOr<std::unique_ptr<Transport>> {
    RendezvousClient client(address, token, &cancelled);
    GlooOptions o{.rendezvous = &client,
                  .key_prefix = GenerationPrefix(generation),
                  .rank = rank,
                  .world_size = world_size,
                  .bind_host = bind_host,
                  .deadline = deadline};
    absl::StatusOr<std::unique_ptr<GlooTransport>> t = GlooTransport::Connect(o);
    if (!t.ok()) return t.status();
    return std::unique_ptr<Transport>(*std::move(t));
  };
}

}  // namespace weightcast
