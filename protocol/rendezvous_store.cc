#include "protocol/rendezvous_store.h"

#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "transport/gloo_transport.h"
#include "transport/nccl_transport.h"

namespace weightcast {
namespace {

absl::StatusOr<std::unique_ptr<Transport>> ConnectGloo(const DataPlaneOptions& o,
                                                       const TransportRequest& r,
                                                       const std::atomic<bool>& cancelled) {
  RendezvousClient client(o.rendezvous_address, o.token, &cancelled);
  GlooOptions g{.rendezvous = &client,
                .key_prefix = GenerationPrefix(r.generation),
                .rank = r.rank,
                .world_size = r.world_size,
                .bind_host = o.bind_host,
                .deadline = r.deadline};
  absl::StatusOr<std::unique_ptr<GlooTransport>> t = GlooTransport::Connect(g);
  if (!t.ok()) return t.status();
  return std::unique_ptr<Transport>(*std::move(t));
}

// Rank 0 of the generation makes the NCCL unique id and publishes it (hex,
// since store values are strings) under the generation's prefix; the others
// wait for it. The id is never reused: a new generation has new keys.
absl::StatusOr<std::unique_ptr<Transport>> ConnectNccl(const DataPlaneOptions& o,
                                                       const TransportRequest& r,
                                                       const std::atomic<bool>& cancelled) {
  RendezvousClient client(o.rendezvous_address, o.token, &cancelled);
  const std::string key = absl::StrCat(GenerationPrefix(r.generation), "nccl_id");
  std::array<char, kNcclUniqueIdBytes> id{};
  if (r.rank == 0) {
    ASSIGN_OR_RETURN(id, NewNcclUniqueId());
    RETURN_IF_ERROR(client.Set(key, absl::BytesToHexString(absl::string_view(id.data(), id.size()))));
  } else {
    RETURN_IF_ERROR(client.Wait({key}, r.deadline));
    ASSIGN_OR_RETURN(std::string hex, client.Get(key));
    const std::string bytes = absl::HexStringToBytes(hex);
    if (bytes.size() != id.size()) {
      return absl::DataLossError(absl::StrCat("rendezvous key ", key, ": ", hex.size(),
                                              " hex digits, expected ", 2 * id.size()));
    }
    std::memcpy(id.data(), bytes.data(), id.size());
  }
  if (cancelled) return absl::CancelledError("cancelled before the NCCL communicator was made");
  absl::StatusOr<std::unique_ptr<NcclTransport>> t =
      NcclTransport::Connect(NcclOptions{.rank = r.rank,
                                         .world_size = r.world_size,
                                         .unique_id = id,
                                         .device = o.cuda_device,
                                         .deadline = r.deadline,
                                         .num_senders = static_cast<int>(r.num_senders)});
  if (!t.ok()) return t.status();
  return std::unique_ptr<Transport>(*std::move(t));
}

}  // namespace

TransportFactory MakeTransportFactory(const DataPlaneOptions& options) {
  return [options](const TransportRequest& r, const std::atomic<bool>& cancelled)
             -> absl::StatusOr<std::unique_ptr<Transport>> {
    if (r.kind == "gloo") return ConnectGloo(options, r, cancelled);
    if (r.kind == "nccl") return ConnectNccl(options, r, cancelled);
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", r.rank, ": unknown transport '", r.kind, "' (gloo or nccl)"));
  };
}

}  // namespace weightcast
