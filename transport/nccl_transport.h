// NcclTransport: the Transport (transport/transport.h) over NCCL, moving
// device memory between the senders' and the inference ranks' GPUs.
//
// The communicator is non-blocking (ncclConfig_t.blocking = 0): init,
// every collective and teardown are polled (ncclCommGetAsyncError plus
// cudaStreamQuery on the transport's own stream) until done or the caller's
// deadline, and ncclCommAbort ends the communicator on timeout, Abort() or a
// peer failure, so a hung peer never blocks the daemon, which re-forms the
// group under a new generation.
//
//   ASSIGN_OR_RETURN(std::array<char, 128> id, NewNcclUniqueId());  // rank 0
//   ... exchange `id` through the group rendezvous ...
//   ASSIGN_OR_RETURN(auto t, NcclTransport::Connect({.rank = r, .world_size = n,
//                                                    .unique_id = id, .device = 0,
//                                                    .deadline = absl::Now() + absl::Seconds(60)}));
//   RETURN_IF_ERROR(t->Broadcast(d_bucket, bytes, /*root=*/0, deadline));
//
// Broadcast data are device pointers on `device`; the call returns when the
// broadcast is complete on this rank (the caller's streams need no further
// synchronisation with it). BroadcastHost takes host memory and stages it
// through a device buffer the transport owns (grown on demand, kept until
// destruction): it is meant for the small control messages of an update
// (manifests, a few KB to a few MB), not for buckets.
//
// Partial broadcast: with NcclOptions.num_senders = S (0 < S < world_size),
// Connect also splits the communicator once per sender (ncclCommSplit,
// non-blocking as well): sub-communicator s holds sender s, as its rank 0,
// and the inference ranks [S, world_size). BroadcastToRanks from root s runs
// on it, so each sender's buckets reach the inference ranks only and the
// other senders do not call. Each sub-communicator has NCCL buffers and
// connections of its own (S times the memory of one communicator between
// those ranks).
//
// Threading: NCCL requires that a communicator be used by one thread at a
// time, so every NCCL call of this transport (its communicator and the
// per-sender sub-communicators, at init, in collectives and at
// teardown) is made by the thread calling Connect / Broadcast /
// BroadcastHost / BroadcastToRanks / AllReduceMin / the destructor, one call
// at a time (the update thread, as in Transport). Abort() only raises flags:
// the update thread notices within one poll interval and aborts the
// communicators itself. All communicators share the transport's one stream,
// which is fine because the calls are serialized.
#ifndef WEIGHTCAST_TRANSPORT_NCCL_TRANSPORT_H_
#define WEIGHTCAST_TRANSPORT_NCCL_TRANSPORT_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "transport/transport.h"

// Opaque NCCL / CUDA handles, so users of this header need no CUDA headers.
struct ncclComm;
struct CUstream_st;

namespace weightcast {

inline constexpr size_t kNcclUniqueIdBytes = 128;

// A fresh ncclUniqueId (ncclGetUniqueId) as bytes, made by rank 0 and sent to
// the others through the rendezvous. UNAVAILABLE when NCCL cannot bootstrap
// (e.g. no network interface).
[[nodiscard]] absl::StatusOr<std::array<char, kNcclUniqueIdBytes>> NewNcclUniqueId();

struct NcclOptions {
  int rank = 0;
  int world_size = 1;
  std::array<char, kNcclUniqueIdBytes> unique_id{};
  int device = 0;  // CUDA device ordinal of this rank
  absl::Time deadline = absl::InfiniteFuture();  // for the communicator init
  // Number of senders (ranks [0, num_senders); the inference ranks are
  // [num_senders, world_size)). When 0 < num_senders < world_size, Connect
  // also makes one sub-communicator per sender (that sender plus every
  // inference rank) so BroadcastToRanks works; 0 means no partial broadcast.
  int num_senders = 0;
  // Optional: raised by another thread (the group's Abort, a planned stop),
  // Connect gives up within a poll interval with CANCELLED instead of
  // waiting out the deadline. Must outlive the call.
  const std::atomic<bool>* cancel = nullptr;
};

class NcclTransport final : public Transport {
 public:
  // Creates this rank's communicator and, with num_senders set, the
  // per-sender sub-communicators (ncclCommSplit of it, all ranks splitting
  // in the same order). Every rank of the group must call it with the same
  // unique_id, world_size and num_senders. INVALID_ARGUMENT for bad
  // rank/world/num_senders (checked before any CUDA call) or device;
  // DEADLINE_EXCEEDED when the other ranks do not all join (or split) by the
  // deadline; CANCELLED once `cancel` is raised; UNAVAILABLE / INTERNAL for
  // NCCL or CUDA failures.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<NcclTransport>> Connect(
      const NcclOptions& options);

  ~NcclTransport() override;
  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  bool IsDeviceMemory() const override { return true; }

  absl::Status Broadcast(void* data, size_t bytes, int root, absl::Time deadline) override;
  // `data` is host memory (pageable is fine): H2D into the staging buffer on
  // the root, ncclBroadcast, D2H on the others, waited like Broadcast.
  absl::Status BroadcastHost(void* data, size_t bytes, int root, absl::Time deadline) override;
  // True when Connect made the per-sender sub-communicators
  // (0 < num_senders < world_size); stays true after an error.
  bool SupportsPartialBroadcast() const override { return !sub_comms_.empty(); }
  // Broadcast from sender `root` to the inference ranks over that sender's
  // sub-communicator; the other senders do not call. `first_receiver` must
  // be num_senders (INVALID_ARGUMENT otherwise, as for a root that is not a
  // sender or a call on another sender). `tag` is not used: NCCL matches
  // collectives by their order on each communicator, and every member of a
  // sub-communicator issues its broadcasts in the same order.
  absl::Status BroadcastToRanks(void* data, size_t bytes, int root, int first_receiver,
                                uint64_t tag, absl::Time deadline) override;
  absl::StatusOr<int64_t> AllReduceMin(int64_t value, absl::Time deadline) override;
  void Abort() override;
  bool healthy() const override { return healthy_.load(std::memory_order_acquire); }

 private:
  NcclTransport(int rank, int world_size, int device, int num_senders, ncclComm* comm,
                CUstream_st* stream, int64_t* d_value, int64_t* h_value);

  // Makes sub_comms_[s] for every sender s (Connect, after comm_ is ready).
  // On error the transport is failed (every communicator aborted).
  absl::Status SplitPerSender(absl::Time deadline, const std::atomic<bool>* cancel);
  // Checks state before a collective: ABORTED after Abort(), FAILED_PRECONDITION
  // when already broken.
  absl::Status CheckUsable() const;
  // Grows the host-broadcast staging buffer to at least `bytes`.
  absl::Status EnsureStaging(size_t bytes);
  // Polls `comm` and the stream until the work last enqueued completed on
  // this rank.
  absl::Status WaitForCompletion(ncclComm* comm, absl::Time deadline, const char* what,
                                 int root);
  // Aborts every communicator, `busy` (the one with work in flight; the
  // parent when null) first, and marks the transport broken; returns `s`.
  absl::Status Fail(absl::Status s, ncclComm* busy = nullptr);
  // ncclCommAbort on `first` (when not null), then on comm_ and every
  // sub-communicator still alive; the slots are left null.
  void AbortCommunicators(ncclComm* first);

  const int rank_;
  const int world_size_;
  const int device_;
  const int num_senders_;
  ncclComm* comm_;  // null once aborted or destroyed
  // Empty without partial broadcast, else one slot per sender: the
  // sub-communicator of sender s, null on the other senders (not members)
  // and once aborted or destroyed. Sized once in the constructor and never
  // resized, because NCCL writes a slot from its own thread while a split is
  // in flight.
  std::vector<ncclComm*> sub_comms_;
  CUstream_st* stream_;
  int64_t* d_value_;  // device scratch for AllReduceMin
  int64_t* h_value_;  // pinned host mirror
  void* staging_ = nullptr;  // device staging for BroadcastHost
  size_t staging_bytes_ = 0;
  std::atomic<bool> abort_requested_{false};
  std::atomic<bool> healthy_{true};
};

}  // namespace weightcast

#endif  // WEIGHTCAST_TRANSPORT_NCCL_TRANSPORT_H_
