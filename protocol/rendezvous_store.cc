#include "protocol/rendezvous_store.h"

#include <atomic>
#include <cstring>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "transport/gloo_transport.h"
#include "transport/host_as_device_transport.h"
#include "transport/nccl_transport.h"

namespace weightcast {
namespace {

// One gloo connect, on a thread of its own that owns everything it touches:
// gloo's connectFullMesh cannot be interrupted, and was seen (about once in
// a few hundred updates with peers killed mid-update) waiting in
// Pair::connect well past its timeout. The caller stops waiting at the
// deadline or as soon as it is cancelled; an abandoned attempt cancels its
// rendezvous calls and frees itself (connections included) whenever gloo
// returns.
struct GlooAttempt {
  std::atomic<bool> cancelled{false};
  std::unique_ptr<RendezvousClient> client;
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::StatusOr<std::unique_ptr<GlooTransport>> result ABSL_GUARDED_BY(mu);
};

absl::StatusOr<std::unique_ptr<Transport>> ConnectGloo(const DataPlaneOptions& o,
                                                       const TransportRequest& r,
                                                       const std::atomic<bool>& cancelled) {
  auto attempt = std::make_shared<GlooAttempt>();
  attempt->client =
      std::make_unique<RendezvousClient>(o.rendezvous_address, o.token, &attempt->cancelled);
  GlooOptions g{.rendezvous = attempt->client.get(),
                .key_prefix = GenerationPrefix(r.generation),
                .rank = r.rank,
                .world_size = r.world_size,
                .bind_host = o.bind_host,
                .deadline = r.deadline};
  std::thread([attempt, g] {
    absl::StatusOr<std::unique_ptr<GlooTransport>> t = GlooTransport::Connect(g);
    absl::MutexLock lock(&attempt->mu);
    attempt->result = std::move(t);
    attempt->done = true;
  }).detach();
  // gloo's own timeout is the deadline; give it a little beyond that to
  // report its error itself.
  const absl::Time give_up = r.deadline == absl::InfiniteFuture()
                                 ? absl::InfiniteFuture()
                                 : r.deadline + absl::Seconds(2);
  absl::MutexLock lock(&attempt->mu);
  while (!attempt->done) {
    if (cancelled) {
      // gloo may be inside a connect no rendezvous call can end: leave it.
      attempt->cancelled = true;
      return absl::CancelledError(absl::StrCat("gloo: rank ", r.rank, " connecting group ",
                                               g.key_prefix, ": cancelled"));
    }
    if (absl::Now() >= give_up) {
      attempt->cancelled = true;
      return absl::DeadlineExceededError(absl::StrCat(
          "gloo: rank ", r.rank, " connecting group ", g.key_prefix,
          ": still connecting past its deadline (abandoned)"));
    }
    attempt->mu.AwaitWithTimeout(absl::Condition(&attempt->done), absl::Milliseconds(100));
  }
  if (!attempt->result.ok()) return attempt->result.status();
  return std::unique_ptr<Transport>(*std::move(attempt->result));
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
                                         .num_senders = static_cast<int>(r.num_senders),
                                         .cancel = &cancelled});
  if (!t.ok()) return t.status();
  return std::unique_ptr<Transport>(*std::move(t));
}

}  // namespace

TransportFactory MakeTransportFactory(const DataPlaneOptions& options) {
  return [options](const TransportRequest& r, const std::atomic<bool>& cancelled)
             -> absl::StatusOr<std::unique_ptr<Transport>> {
    if (r.kind == "gloo") return ConnectGloo(options, r, cancelled);
#ifdef WEIGHTCAST_HOST_TWIN
    // The host twin (kernels/host_twin): an nccl group runs over gloo, its
    // transport reporting device memory, so every device-path branch of
    // the senders and receivers runs on the CPU.
    if (r.kind == "nccl") {
      ASSIGN_OR_RETURN(std::unique_ptr<Transport> t, ConnectGloo(options, r, cancelled));
      return std::unique_ptr<Transport>(std::make_unique<HostAsDeviceTransport>(std::move(t)));
    }
#endif
    if (r.kind == "nccl") return ConnectNccl(options, r, cancelled);
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", r.rank, ": unknown transport '", r.kind, "' (gloo or nccl)"));
  };
}

}  // namespace weightcast
