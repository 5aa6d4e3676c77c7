#include "sender/update_pipeline.h"

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "kernels/finite_guard.h"
#include "protocol/manifest_exchange.h"

namespace weightcast {
namespace {

// Two staging slots of the packer: a packer thread fills slot k % 2 with
// own bucket k while the update thread broadcasts bucket k - 1.
class DoubleBufferedPacker {
 public:
  DoubleBufferedPacker(const SenderUpdate& u, BucketPacker& packer, uint32_t first_global)
      : u_(u), packer_(packer), first_global_(first_global) {
    input_ = PackInput{.outputs = u.outputs,
                       .sources = u.sources,
                       .on_device = u.source_on_device,
                       .weight_version = u.weight_version,
                       .check_finite = u.check_finite};
    thread_ = std::thread([this] { Loop(); });
  }
  ~DoubleBufferedPacker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // Blocks until own bucket k is packed; returns its slot.
  absl::StatusOr<std::byte*> Acquire(size_t k) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return packed_ > k || !status_.ok(); });
    if (!status_.ok()) return status_;
    return packer_.slot(static_cast<int>(k % 2));
  }
  // The first non-finite value found (NonFiniteValueError), OK if none; the
  // buckets are packed all the same. Call after the last Acquire.
  absl::Status refusal() {
    std::lock_guard<std::mutex> lock(mu_);
    return refusal_;
  }
  // Bucket k was broadcast: its slot may be reused.
  void Release(size_t k) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = k + 1;
    }
    cv_.notify_all();
  }

 private:
  void Loop() {
    const auto& buckets = u_.plan->buckets;
    if (absl::Status st = packer_.Prepare(input_, buckets); !st.ok()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        status_ = st;
      }
      cv_.notify_all();
      return;
    }
    for (size_t k = 0; k < buckets.size(); ++k) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        // Slot k % 2 is free once bucket k - 2 was broadcast.
        cv_.wait(lock, [&] { return stop_ || k < released_ + 2; });
        if (stop_) return;
      }
      absl::Status st = packer_.Pack(input_, buckets[k], first_global_ + static_cast<uint32_t>(k),
                                     static_cast<int>(k % 2));
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (IsNonFiniteValueError(st)) {
          // The bucket is whole: it goes out, and the version is voted down.
          if (refusal_.ok()) refusal_ = st;
          st = absl::OkStatus();
        }
        if (!st.ok()) {
          status_ = st;
        } else {
          packed_ = k + 1;
        }
      }
      cv_.notify_all();
      if (!st.ok()) return;
    }
  }

  const SenderUpdate& u_;
  BucketPacker& packer_;
  PackInput input_;
  uint32_t first_global_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t packed_ = 0;
  size_t released_ = 0;
  bool stop_ = false;
  absl::Status status_;
  absl::Status refusal_;
  std::thread thread_;
};

// Collects the reasons receivers left for a "no" vote.
std::string VoteReasons(const SenderUpdate& u, int world_size) {
  if (u.store == nullptr) return "";
  std::vector<std::string> reasons;
  for (int r = 0; r < world_size; ++r) {
    absl::StatusOr<std::string> why = u.store->Get(ErrorKey(u.seq, r));
    if (why.ok()) reasons.push_back(absl::StrCat("rank ", r, ": ", *why));
  }
  return absl::StrJoin(reasons, "; ");
}

}  // namespace

absl::StatusOr<UpdateSummary> RunSenderUpdate(Transport& transport, const SenderUpdate& u,
                                              const UpdateEventSink& on_event) {
  const int rank = transport.rank();
  SenderManifest mine = MakeSenderManifest(u.weight_version, static_cast<uint32_t>(rank),
                                           u.num_senders, u.outputs, *u.plan, u.config_json);
  ASSIGN_OR_RETURN(GlobalManifest global,
                   ExchangeManifests(transport, u.num_senders, u.weight_version, &mine,
                                     u.op_timeout));
  UpdateSummary summary{.total_bytes = global.payload_bytes,
                        .num_buckets = static_cast<uint32_t>(global.buckets.size())};
  uint32_t first_own = 0;
  while (first_own < global.buckets.size() &&
         global.buckets[first_own].root != static_cast<uint32_t>(rank)) {
    ++first_own;
  }
  on_event(PlannedEvent{.num_buckets = summary.num_buckets,
                        .own_buckets = static_cast<uint32_t>(u.plan->buckets.size()),
                        .total_bytes = global.payload_bytes,
                        .num_tensors = static_cast<uint32_t>(global.tensors.size())});

  std::unique_ptr<BucketPacker> host_packer;
  BucketPacker* bucket_packer = u.packer;
  if (bucket_packer == nullptr) {
    host_packer = NewHostBucketPacker();
    bucket_packer = host_packer.get();
  }
  if (bucket_packer->device() != transport.IsDeviceMemory()) {
    transport.Abort();  // the others must not wait for this rank
    return absl::FailedPreconditionError(absl::StrCat(
        "rank ", rank, ": the packer stages buckets in ", bucket_packer->device() ? "GPU" : "host",
        " memory but the transport moves ", transport.IsDeviceMemory() ? "GPU" : "host",
        " memory"));
  }
  // The slots hold this rank's largest bucket: memory stays at two buckets
  // whatever the model size.
  size_t max_own = 0;
  for (const Bucket& b : u.plan->buckets) max_own = std::max<size_t>(max_own, b.bytes);
  if (absl::Status s = bucket_packer->Reserve(max_own + kBucketTrailerBytes); !s.ok()) {
    transport.Abort();
    return s;
  }
  std::optional<DoubleBufferedPacker> packer;
  if (!u.plan->buckets.empty()) {
    packer.emplace(u, *bucket_packer, first_own);
  } else {
    on_event(SourceReleasedEvent{});
  }
  // With a partial broadcast, buckets go from their sender to the inference
  // ranks only; otherwise every rank takes part and other senders' buckets
  // pass through the packer's scratch buffer.
  const bool partial = transport.SupportsPartialBroadcast();
  if (!partial) {
    // Sized now, not as the other senders' buckets arrive.
    size_t max_global = 0;
    for (const GlobalBucket& b : global.buckets) max_global = std::max<size_t>(max_global, b.bytes);
    if (absl::StatusOr<std::byte*> s = bucket_packer->Scratch(max_global + kBucketTrailerBytes);
        !s.ok()) {
      transport.Abort();
      return s.status();
    }
  }
  size_t own = 0;
  // Other senders' buckets since this rank's last one: with a partial
  // broadcast this rank does not take part in them, but the receivers take
  // them first, so its next send may wait up to one timeout for each.
  int64_t others_waiting = 0;
  for (uint32_t g = 0; g < global.buckets.size(); ++g) {
    const GlobalBucket& b = global.buckets[g];
    const size_t bytes = b.bytes + kBucketTrailerBytes;
    if (b.root != static_cast<uint32_t>(rank)) ++others_waiting;
    if (b.root == static_cast<uint32_t>(rank)) {
      absl::StatusOr<std::byte*> buf = packer->Acquire(own);
      if (!buf.ok()) {
        transport.Abort();  // the others must not wait for this bucket
        return buf.status();
      }
      if (own + 1 == u.plan->buckets.size()) on_event(SourceReleasedEvent{});
      const absl::Time deadline =
          absl::Now() + u.op_timeout * (1 + (partial ? others_waiting : 0));
      others_waiting = 0;
      RETURN_IF_ERROR(
          BroadcastBucket(transport, *buf, bytes, b.root, u.num_senders, u.seq, g, deadline));
      packer->Release(own);
      ++own;
      summary.bytes_sent += b.bytes;
      on_event(BucketSentEvent{.index = g, .num_buckets = summary.num_buckets,
                               .bytes = b.bytes, .root = b.root});
    } else if (!partial) {
      absl::StatusOr<std::byte*> scratch = bucket_packer->Scratch(bytes);
      if (!scratch.ok()) {
        transport.Abort();
        return scratch.status();
      }
      RETURN_IF_ERROR(BroadcastBucket(transport, *scratch, bytes, b.root, u.num_senders, u.seq, g,
                                      absl::Now() + u.op_timeout));
    }
  }
  // A source holding NaN or +-inf (the guard): every bucket went out, so the
  // group stays in step, and this rank votes no; the others learn why from
  // the store, as they do for a receiver's no.
  absl::Status refusal = packer.has_value() ? packer->refusal() : absl::OkStatus();
  packer.reset();
  if (refusal.ok() && u.sources_intact) refusal = u.sources_intact();
  if (!refusal.ok() && u.store != nullptr) {
    (void)u.store->Set(ErrorKey(u.seq, rank), std::string(refusal.message()));
  }
  ASSIGN_OR_RETURN(int64_t vote,
                   transport.AllReduceMin(refusal.ok() ? 1 : 0, absl::Now() + u.op_timeout));
  if (!refusal.ok()) {
    return WithMessagePrefix(refusal, absl::StrCat("version ", u.weight_version,
                                                   " was not committed: rank ", rank, ": "));
  }
  if (vote != 1) {
    std::string reasons = VoteReasons(u, transport.world_size());
    return absl::AbortedError(absl::StrCat("version ", u.weight_version,
                                           " was not committed: a rank voted to abort",
                                           reasons.empty() ? "" : " (", reasons,
                                           reasons.empty() ? "" : ")"));
  }
  if (u.store != nullptr) {
    summary.receivers = CollectPublishReports(*u.store, u.seq, static_cast<int>(u.num_senders),
                                              transport.world_size(), absl::Now() + u.op_timeout);
    std::vector<std::string> behind;
    for (const RankVersion& r : summary.receivers) {
      if (r.version == u.weight_version && r.error.empty()) continue;
      behind.push_back(absl::StrCat("rank ", r.rank, " holds version ", r.version,
                                    r.error.empty() ? "" : ": ", r.error));
    }
    if (!behind.empty()) {
      summary.published = absl::InternalError(absl::StrCat(
          "version ", u.weight_version, " was committed but not published everywhere: ",
          absl::StrJoin(behind, "; ")));
    }
  }
  return summary;
}

}  // namespace weightcast
