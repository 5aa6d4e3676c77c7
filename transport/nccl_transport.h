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
// Threading: NCCL requires that a communicator be used by one thread at a
// time, so every NCCL call of this transport (at init, in collectives and
// at teardown) is made by the thread calling Connect / Broadcast /
// BroadcastHost / AllReduceMin / the destructor, one call at a time (the
// update thread, as in Transport). Abort() only raises a flag: the update
// thread notices within one poll interval and aborts the communicator
// itself.
#ifndef WEIGHTCAST_TRANSPORT_NCCL_TRANSPORT_H_
#define WEIGHTCAST_TRANSPORT_NCCL_TRANSPORT_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>

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
};

class NcclTransport final : public Transport {
 public:
  // Creates this rank's communicator. Every rank of the group must call it
  // with the same unique_id and world_size. INVALID_ARGUMENT for bad
  // rank/world/device; DEADLINE_EXCEEDED when the other ranks do not all join
  // by the deadline; UNAVAILABLE / INTERNAL for NCCL or CUDA failures.
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
  absl::StatusOr<int64_t> AllReduceMin(int64_t value, absl::Time deadline) override;
  void Abort() override;
  bool healthy() const override { return healthy_.load(std::memory_order_acquire); }

 private:
  NcclTransport(int rank, int world_size, int device, ncclComm* comm, CUstream_st* stream,
                int64_t* d_value, int64_t* h_value);
  // Checks state before a collective: ABORTED after Abort(), FAILED_PRECONDITION
  // when already broken.
  absl::Status CheckUsable() const;
  // Grows the host-broadcast staging buffer to at least `bytes`.
  absl::Status EnsureStaging(size_t bytes);
  // Polls until the last enqueued collective completed on this rank.
  absl::Status WaitForCompletion(absl::Time deadline, const char* what, int root);
  // Aborts the communicator and marks the transport broken; returns `s`.
  absl::Status Fail(absl::Status s);

  const int rank_;
  const int world_size_;
  const int device_;
  ncclComm* comm_;  // null once aborted or destroyed
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
