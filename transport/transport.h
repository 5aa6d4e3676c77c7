// Transport: the collective data plane of one group generation.
//
// A Transport connects ranks 0..world_size-1 (senders first, then inference
// ranks) and moves bytes between them. It is created for one "generation" of
// the group (see transport/rendezvous.h) and is not reusable after any error:
// a failed or aborted transport is dropped and the group re-forms under a new
// generation.
//
// Threading: Broadcast/AllReduceMin are called from one thread at a time
// (the update thread). Abort() may be called from any thread at any time and
// makes the pending and every later call return ABORTED promptly.
//
// Memory: `data` may be host memory (GlooTransport) or device memory
// (NcclTransport); IsDeviceMemory() says which the transport expects.
#ifndef WEIGHTCAST_TRANSPORT_TRANSPORT_H_
#define WEIGHTCAST_TRANSPORT_TRANSPORT_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace weightcast {

class Transport {
 public:
  virtual ~Transport() = default;

  [[nodiscard]] virtual int rank() const = 0;
  [[nodiscard]] virtual int world_size() const = 0;
  // True when Broadcast takes device pointers.
  [[nodiscard]] virtual bool IsDeviceMemory() const = 0;

  // Broadcasts `bytes` bytes at `data` from `root` to every rank. On the
  // root, `data` is read; elsewhere it is overwritten. Returns
  // DEADLINE_EXCEEDED if the deadline passes, ABORTED after Abort(),
  // UNAVAILABLE when a peer failed; the message names the root and the peer
  // where known. After any error the transport is broken (see healthy()).
  [[nodiscard]] virtual absl::Status Broadcast(void* data, size_t bytes, int root,
                                               absl::Time deadline) = 0;

  // Broadcast of host memory, whatever memory the transport moves: a device
  // transport stages `data` through device memory of its own (used for the
  // small control messages of an update, such as the manifests). Same error
  // contract as Broadcast.
  [[nodiscard]] virtual absl::Status BroadcastHost(void* data, size_t bytes, int root,
                                                   absl::Time deadline) {
    return Broadcast(data, bytes, root, deadline);
  }

  // Whether BroadcastToRanks works (point-to-point transports such as gloo;
  // NCCL would need a sub-communicator per sender).
  [[nodiscard]] virtual bool SupportsPartialBroadcast() const { return false; }

  // Broadcasts from `root` to the ranks [first_receiver, world_size) only;
  // the ranks between (the other senders) do not take part and do not call.
  // `tag` identifies the transfer on both sides (it must be unique among
  // partial broadcasts in flight, e.g. update and bucket). Same error
  // contract as Broadcast. FAILED_PRECONDITION unless
  // SupportsPartialBroadcast().
  [[nodiscard]] virtual absl::Status BroadcastToRanks(void* data, size_t bytes, int root,
                                                      int first_receiver, uint64_t tag,
                                                      absl::Time deadline) {
    return absl::FailedPreconditionError("this transport has no partial broadcast");
  }

  // Every rank contributes `value`; every rank gets the minimum. Used for the
  // commit vote (1 = ok, 0 = failed). Same error contract as Broadcast.
  [[nodiscard]] virtual absl::StatusOr<int64_t> AllReduceMin(int64_t value,
                                                             absl::Time deadline) = 0;

  // Makes pending and later calls fail with ABORTED. Thread-safe, idempotent.
  virtual void Abort() = 0;

  // False after any error or Abort().
  [[nodiscard]] virtual bool healthy() const = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_TRANSPORT_TRANSPORT_H_
