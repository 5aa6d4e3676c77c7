#include "transport/nccl_transport.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_check.h"
#include "kernels/device_memory.h"

namespace weightcast {
namespace {

// Poll interval: short enough that Abort() and deadlines take effect within
// well under a millisecond of work, long enough not to spin a core flat out.
constexpr absl::Duration kPoll = absl::Microseconds(20);

void Pause() { std::this_thread::sleep_for(absl::ToChronoMicroseconds(kPoll)); }

// Polls a non-blocking communicator until it leaves ncclInProgress.
// Returns the final state, or ncclInProgress at the deadline / on abort.
ncclResult_t PollComm(ncclComm_t comm, absl::Time deadline, const std::atomic<bool>* abort) {
  for (;;) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return r;
    if (state != ncclInProgress) return state;
    if (absl::Now() >= deadline) return ncclInProgress;
    if (abort != nullptr && abort->load(std::memory_order_acquire)) return ncclInProgress;
    Pause();
  }
}

// Graceful teardown of one communicator: flush, wait (bounded) for
// quiescence, then free locally. False (and `comm` left alone, for
// ncclCommAbort) when it does not get there by the deadline.
bool FinalizeAndDestroy(ncclComm_t& comm, absl::Time deadline) {
  if (comm == nullptr) return true;
  const ncclResult_t f = ncclCommFinalize(comm);
  if ((f != ncclSuccess && f != ncclInProgress) ||
      PollComm(comm, deadline, nullptr) != ncclSuccess) {
    return false;
  }
  ncclCommDestroy(comm);
  comm = nullptr;
  return true;
}

// Smallest BroadcastHost staging buffer: most manifests fit, so the first
// one allocates once.
constexpr size_t kMinStagingBytes = size_t{64} << 10;

// A communicator slot that NCCL may write from its own thread: ncclCommSplit
// on a non-blocking parent stores the new communicator into *newcomm only
// when the split job finishes (NCCL uses an atomic store for it).
ncclComm_t LoadSlot(ncclComm_t& slot) {
  return std::atomic_ref<ncclComm_t>(slot).load(std::memory_order_acquire);
}

}  // namespace

absl::StatusOr<std::array<char, kNcclUniqueIdBytes>> NewNcclUniqueId() {
  static_assert(sizeof(ncclUniqueId) == kNcclUniqueIdBytes);
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) {
    return absl::UnavailableError(
        absl::StrCat("ncclGetUniqueId failed: ", ncclGetErrorString(r)));
  }
  std::array<char, kNcclUniqueIdBytes> bytes;
  std::memcpy(bytes.data(), id.internal, kNcclUniqueIdBytes);
  return bytes;
}

absl::StatusOr<std::unique_ptr<NcclTransport>> NcclTransport::Connect(const NcclOptions& o) {
  // Options first, so a bad configuration is reported as such even on a
  // machine without a GPU or driver.
  if (o.world_size <= 0 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL: rank ", o.rank, " outside world of ", o.world_size));
  }
  if (o.num_senders < 0 || o.num_senders > o.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", o.rank, ": ", o.num_senders,
                                                   " senders in a world of ", o.world_size));
  }
  int devices = 0;
  RETURN_IF_CUDA_ERROR(cudaGetDeviceCount(&devices), "NCCL rank ", o.rank);
  if (o.device < 0 || o.device >= devices) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL rank ", o.rank, ": device ", o.device, " of ", devices));
  }
  RETURN_IF_CUDA_ERROR(cudaSetDevice(o.device), "NCCL rank ", o.rank);

  ncclUniqueId id;
  std::memcpy(id.internal, o.unique_id.data(), kNcclUniqueIdBytes);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, o.world_size, id, o.rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm != nullptr) ncclCommAbort(comm);
    return NcclErrorStatus(r, "ncclCommInitRankConfig", "rank ", o.rank, " of ", o.world_size);
  }
  r = PollComm(comm, o.deadline, o.cancel);
  if (r != ncclSuccess) {
    ncclCommAbort(comm);
    if (r == ncclInProgress && o.cancel != nullptr && o.cancel->load()) {
      return absl::CancelledError(
          absl::StrCat("NCCL rank ", o.rank, ": cancelled while the communicator formed"));
    }
    if (r == ncclInProgress) {
      return absl::DeadlineExceededError(absl::StrCat(
          "NCCL rank ", o.rank, ": not every one of ", o.world_size, " ranks joined in time"));
    }
    return NcclErrorStatus(r, "ncclCommInitRankConfig", "rank ", o.rank, " of ", o.world_size);
  }

  cudaStream_t stream = nullptr;
  int64_t* d_value = nullptr;
  int64_t* h_value = nullptr;
  auto cleanup = [&](absl::Status s) {
    if (h_value != nullptr) cudaFreeHost(h_value);
    if (d_value != nullptr) cudaFree(d_value);
    if (stream != nullptr) cudaStreamDestroy(stream);
    ncclCommAbort(comm);
    return s;
  };
  if (cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); e != cudaSuccess) {
    return cleanup(CudaErrorStatus(e, "cudaStreamCreateWithFlags"));
  }
  if (cudaError_t e = cudaMalloc(&d_value, sizeof(int64_t)); e != cudaSuccess) {
    return cleanup(CudaErrorStatus(e, "cudaMalloc"));
  }
  if (cudaError_t e = cudaMallocHost(&h_value, sizeof(int64_t)); e != cudaSuccess) {
    return cleanup(CudaErrorStatus(e, "cudaMallocHost"));
  }
  // From here the transport owns the communicator and the buffers: on a
  // failed split its destructor aborts and frees them.
  std::unique_ptr<NcclTransport> t(new NcclTransport(o.rank, o.world_size, o.device,
                                                     o.num_senders, comm, stream, d_value,
                                                     h_value));
  if (t->SupportsPartialBroadcast()) {
    if (absl::Status s = t->SplitPerSender(o.deadline, o.cancel); !s.ok()) return s;
  }
  return t;
}

NcclTransport::NcclTransport(int rank, int world_size, int device, int num_senders,
                             ncclComm* comm, CUstream_st* stream, int64_t* d_value,
                             int64_t* h_value)
    : rank_(rank),
      world_size_(world_size),
      device_(device),
      num_senders_(num_senders),
      comm_(comm),
      sub_comms_(num_senders > 0 && world_size > num_senders ? num_senders : 0, nullptr),
      stream_(stream),
      d_value_(d_value),
      h_value_(h_value) {}

absl::Status NcclTransport::SplitPerSender(absl::Time deadline,
                                           const std::atomic<bool>* cancel) {
  // Split s keeps sender s and every inference rank; the other senders take
  // part in the split (it is collective over the parent) with NOCOLOR and
  // get no communicator. key = rank keeps the parent's order, so sender s,
  // below every inference rank, is rank 0 of its sub-communicator.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // polled against the deadline, like the parent
  for (int s = 0; s < num_senders_; ++s) {
    const bool member = rank_ == s || rank_ >= num_senders_;
    const int color = member ? 0 : NCCL_SPLIT_NOCOLOR;
    ncclResult_t r = ncclCommSplit(comm_, color, rank_, &sub_comms_[s], &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      return Fail(NcclErrorStatus(r, "ncclCommSplit", "rank ", rank_, ", sub-communicator of root ",
                                  s));
    }
    // With a non-blocking parent the split runs as a job of the parent: the
    // parent stays ncclInProgress until it ends, and only then is the new
    // communicator stored into the slot (null until then). So poll the
    // parent first (the next split also needs it ready), then the child.
    r = PollComm(comm_, deadline, cancel);
    if (r == ncclSuccess && member) {
      ncclComm_t sub = LoadSlot(sub_comms_[s]);
      if (sub == nullptr) {
        return Fail(absl::InternalError(absl::StrCat(
            "NCCL rank ", rank_, ": ncclCommSplit for root ", s, " made no communicator")));
      }
      r = PollComm(sub, deadline, cancel);
    }
    if (r == ncclInProgress && cancel != nullptr && cancel->load()) {
      return Fail(absl::CancelledError(absl::StrCat(
          "NCCL rank ", rank_, ": cancelled while the sub-communicator of root ", s, " formed")));
    }
    if (r == ncclInProgress) {
      return Fail(absl::DeadlineExceededError(
          absl::StrCat("NCCL rank ", rank_, ": sub-communicator of root ", s,
                       " not formed by the deadline (not every rank split in time)")));
    }
    if (r != ncclSuccess) {
      return Fail(NcclErrorStatus(r, "ncclCommSplit", "rank ", rank_, ", sub-communicator of root ",
                                  s));
    }
  }
  return absl::OkStatus();
}

NcclTransport::~NcclTransport() {
  cudaSetDevice(device_);
  if (healthy() && !abort_requested_.load()) {
    // One deadline for the lot, so a vanished peer costs 5 s, not 5 s per
    // communicator. Every rank tears down in the same order (sub-
    // communicators by sender, then the parent); after the first failure
    // the rest are aborted below.
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    bool clean = true;
    for (ncclComm*& sub : sub_comms_) clean = clean && FinalizeAndDestroy(sub, deadline);
    if (clean) FinalizeAndDestroy(comm_, deadline);
  }
  AbortCommunicators(nullptr);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  if (staging_ != nullptr) {
    CountDeviceMemory(-static_cast<int64_t>(staging_bytes_));
    cudaFree(staging_);
  }
  if (d_value_ != nullptr) cudaFree(d_value_);
  if (h_value_ != nullptr) cudaFreeHost(h_value_);
}

void NcclTransport::Abort() {
  // The update thread notices within one poll interval and aborts the
  // communicator itself: NCCL calls on one communicator stay on one thread.
  abort_requested_.store(true, std::memory_order_release);
  healthy_.store(false, std::memory_order_release);
}

absl::Status NcclTransport::CheckUsable() const {
  if (abort_requested_.load(std::memory_order_acquire)) {
    return absl::AbortedError(absl::StrCat("NCCL rank ", rank_, ": transport aborted"));
  }
  if (!healthy() || comm_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("NCCL rank ", rank_, ": transport broken by an earlier error"));
  }
  return absl::OkStatus();
}

void NcclTransport::AbortCommunicators(ncclComm* first) {
  auto abort_slot = [](ncclComm_t& slot) {
    if (ncclComm_t c = LoadSlot(slot); c != nullptr) {
      ncclCommAbort(c);  // also ends any kernel still waiting on a peer
      std::atomic_ref<ncclComm_t>(slot).store(nullptr, std::memory_order_release);
    }
  };
  // The communicator with work in flight goes first: its kernel may be
  // waiting on a peer forever, and tearing down another communicator first
  // could wait on the device behind it. During a split that is the parent,
  // whose abort also ends and joins the split job, so the sub-communicator
  // slots are final when they are read after it.
  if (first != nullptr) {
    if (LoadSlot(comm_) == first) abort_slot(comm_);
    for (ncclComm_t& sub : sub_comms_) {
      if (LoadSlot(sub) == first) abort_slot(sub);
    }
  }
  abort_slot(comm_);
  for (ncclComm_t& sub : sub_comms_) abort_slot(sub);
}

absl::Status NcclTransport::Fail(absl::Status s, ncclComm* busy) {
  healthy_.store(false, std::memory_order_release);
  AbortCommunicators(busy != nullptr ? busy : comm_);
  return s;
}

absl::Status NcclTransport::EnsureStaging(size_t bytes) {
  if (bytes <= staging_bytes_) return absl::OkStatus();
  // Powers of two: a run of growing manifests reallocates a few times, not
  // at every update.
  size_t want = std::max(bytes, kMinStagingBytes);
  if (want <= (std::numeric_limits<size_t>::max() >> 1) + 1) want = std::bit_ceil(want);
  if (staging_ != nullptr) {
    // Nothing uses the old buffer: every earlier call completed on the
    // stream or broke the transport (which aborted the communicators).
    CountDeviceMemory(-static_cast<int64_t>(staging_bytes_));
    cudaFree(staging_);
    staging_ = nullptr;
    staging_bytes_ = 0;
  }
  RETURN_IF_CUDA_ERROR(cudaMalloc(&staging_, want), "NCCL rank ", rank_, ": ", want,
                       " bytes to stage host broadcasts");
  staging_bytes_ = want;
  CountDeviceMemory(static_cast<int64_t>(want));
  return absl::OkStatus();
}

absl::Status NcclTransport::WaitForCompletion(ncclComm* comm, absl::Time deadline,
                                              const char* what, int root) {
  for (;;) {
    if (abort_requested_.load(std::memory_order_acquire)) {
      return Fail(absl::AbortedError(absl::StrCat("NCCL rank ", rank_, ": ", what, " from root ",
                                                  root, " aborted")),
                  comm);
    }
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) {
      const ncclResult_t bad = r != ncclSuccess ? r : state;
      return Fail(absl::UnavailableError(absl::StrCat("NCCL rank ", rank_, ": ", what,
                                                      " from root ", root, " failed: ",
                                                      ncclGetErrorString(bad))),
                  comm);
    }
    if (state == ncclSuccess) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return absl::OkStatus();
      if (q != cudaErrorNotReady) {
        return Fail(CudaErrorStatus(q, "cudaStreamQuery", "NCCL rank ", rank_, ": ", what,
                                    " from root ", root),
                    comm);
      }
    }
    if (absl::Now() >= deadline) {
      return Fail(absl::DeadlineExceededError(absl::StrCat(
                      "NCCL rank ", rank_, ": ", what, " from root ", root,
                      " not done by the deadline")),
                  comm);
    }
    Pause();
  }
}

absl::Status NcclTransport::Broadcast(void* data, size_t bytes, int root, absl::Time deadline) {
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (root < 0 || root >= world_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL rank ", rank_, ": broadcast root ", root, " outside world of ",
                     world_size_));
  }
  if (bytes == 0) return absl::OkStatus();
  if (data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", rank_, ": null buffer"));
  }
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
  const ncclResult_t r =
      ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, static_cast<cudaStream_t>(stream_));
  if (r != ncclSuccess && r != ncclInProgress) {
    return Fail(NcclErrorStatus(r, "ncclBroadcast", "rank ", rank_, ", root ", root, ", ", bytes,
                                " bytes"));
  }
  return WaitForCompletion(comm_, deadline, "broadcast", root);
}

absl::Status NcclTransport::BroadcastHost(void* data, size_t bytes, int root,
                                          absl::Time deadline) {
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (root < 0 || root >= world_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL rank ", rank_, ": host broadcast root ", root, " outside world of ",
                     world_size_));
  }
  if (bytes == 0) return absl::OkStatus();
  if (data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", rank_, ": null buffer"));
  }
  // From here the peers are entering the collective: any failure breaks the
  // transport, since this rank can no longer stay in step with them.
  if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
    return Fail(CudaErrorStatus(e, "cudaSetDevice", "NCCL rank ", rank_));
  }
  if (absl::Status s = EnsureStaging(bytes); !s.ok()) return Fail(std::move(s));
  auto stream = static_cast<cudaStream_t>(stream_);
  if (rank_ == root) {
    // The stream is idle (every earlier call waited for it), so even a copy
    // from pageable memory, which may hold the host until it is staged,
    // does not wait on a peer.
    if (cudaError_t e = cudaMemcpyAsync(staging_, data, bytes, cudaMemcpyHostToDevice, stream);
        e != cudaSuccess) {
      return Fail(CudaErrorStatus(e, "cudaMemcpyAsync", "NCCL rank ", rank_,
                                  ", host broadcast root ", root));
    }
  }
  const ncclResult_t r = ncclBroadcast(staging_, staging_, bytes, ncclUint8, root, comm_, stream);
  if (r != ncclSuccess && r != ncclInProgress) {
    return Fail(NcclErrorStatus(r, "ncclBroadcast", "rank ", rank_, ", host broadcast root ", root,
                                ", ", bytes, " bytes"));
  }
  if (absl::Status s = WaitForCompletion(comm_, deadline, "host broadcast", root); !s.ok()) {
    return s;
  }
  if (rank_ == root) return absl::OkStatus();
  // Only now the copy out, for two reasons: NCCL may put the broadcast on
  // the stream later, from a thread of its own (non-blocking communicator),
  // so a copy enqueued earlier could run before it; and a copy to pageable
  // memory returns only when done, so behind a broadcast that waits on a
  // hung peer it would block past the deadline and Abort().
  if (cudaError_t e = cudaMemcpyAsync(data, staging_, bytes, cudaMemcpyDeviceToHost, stream);
      e != cudaSuccess) {
    return Fail(CudaErrorStatus(e, "cudaMemcpyAsync", "NCCL rank ", rank_,
                                ", host broadcast root ", root));
  }
  return WaitForCompletion(comm_, deadline, "host broadcast copy-out", root);
}

absl::Status NcclTransport::BroadcastToRanks(void* data, size_t bytes, int root,
                                             int first_receiver, uint64_t /*tag*/,
                                             absl::Time deadline) {
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (!SupportsPartialBroadcast()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "NCCL rank ", rank_, ": no partial broadcast (connected with ", num_senders_,
        " senders in a world of ", world_size_, ")"));
  }
  // Only the split made at Connect exists: the receivers are exactly the
  // inference ranks, and only the root and they take part.
  if (first_receiver != num_senders_ || root < 0 || root >= num_senders_ ||
      (rank_ != root && rank_ < num_senders_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "NCCL rank ", rank_, ": partial broadcast from root ", root, " to ranks >= ",
        first_receiver, " (", num_senders_, " senders: the root must be one, the receivers are ",
        "the ranks >= ", num_senders_, ", the other senders do not call)"));
  }
  if (bytes == 0) return absl::OkStatus();
  if (data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", rank_, ": null buffer"));
  }
  ncclComm_t sub = sub_comms_[root];
  if (sub == nullptr) {  // unreachable while healthy; never hand NCCL a null comm
    return Fail(absl::InternalError(absl::StrCat("NCCL rank ", rank_,
                                                 ": no sub-communicator for root ", root)));
  }
  if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
    return Fail(CudaErrorStatus(e, "cudaSetDevice", "NCCL rank ", rank_));
  }
  // The root is rank 0 of its sub-communicator (see SplitPerSender).
  const ncclResult_t r = ncclBroadcast(data, data, bytes, ncclUint8, /*root=*/0, sub,
                                       static_cast<cudaStream_t>(stream_));
  if (r != ncclSuccess && r != ncclInProgress) {
    return Fail(NcclErrorStatus(r, "ncclBroadcast", "rank ", rank_, ", partial broadcast root ",
                                root, ", ", bytes, " bytes"),
                sub);
  }
  return WaitForCompletion(sub, deadline, "partial broadcast", root);
}

absl::StatusOr<int64_t> NcclTransport::AllReduceMin(int64_t value, absl::Time deadline) {
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
  auto stream = static_cast<cudaStream_t>(stream_);
  *h_value_ = value;
  RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(d_value_, h_value_, sizeof(int64_t), cudaMemcpyHostToDevice, stream));
  const ncclResult_t r = ncclAllReduce(d_value_, d_value_, 1, ncclInt64, ncclMin, comm_, stream);
  if (r != ncclSuccess && r != ncclInProgress) {
    return Fail(NcclErrorStatus(r, "ncclAllReduce", "rank ", rank_));
  }
  // Wait before the copy back: on a non-blocking communicator NCCL returns
  // ncclInProgress and puts the all-reduce on the stream later, from a
  // thread of its own, so a copy enqueued now could run before it and read
  // the old value.
  if (absl::Status s = WaitForCompletion(comm_, deadline, "all-reduce(min)", -1); !s.ok()) {
    return s;
  }
  if (cudaError_t e = cudaMemcpyAsync(h_value_, d_value_, sizeof(int64_t), cudaMemcpyDeviceToHost,
                                      stream);
      e != cudaSuccess) {
    // The peers saw this rank take part: break the transport, as any error does.
    return Fail(CudaErrorStatus(e, "cudaMemcpyAsync", "NCCL rank ", rank_, ", all-reduce(min)"));
  }
  if (absl::Status s = WaitForCompletion(comm_, deadline, "all-reduce(min) copy-out", -1);
      !s.ok()) {
    return s;
  }
  return *h_value_;
}

}  // namespace weightcast
