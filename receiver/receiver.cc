#include "receiver/receiver.h"

#include <algorithm>
#include <cstdlib>
#include <future>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "protocol/manifest_exchange.h"
#include "receiver/cuda_bucket_landing.h"

namespace weightcast {
namespace {

// How long one poll of the store may take while waiting for announcements.
constexpr absl::Duration kPoll = absl::Seconds(1);

// FAILED_PRECONDITION naming what `manifest` lacks, adds or changes against
// the model committed at `model_version` (at most a few of each, and how
// many in all).
absl::Status CheckSameModel(const absl::flat_hash_map<std::string, TensorSpec>& model,
                            uint64_t model_version, const GlobalManifest& manifest) {
  std::vector<std::string> extra, changed, missing;
  absl::flat_hash_set<std::string> seen;
  for (const ManifestTensor& t : manifest.tensors) {
    auto it = model.find(t.spec.name);
    if (it == model.end()) {
      extra.push_back(t.spec.name);
    } else if (!(it->second == t.spec)) {
      changed.push_back(absl::StrCat(DebugString(t.spec), " (was ", DebugString(it->second), ")"));
    }
    seen.insert(t.spec.name);
  }
  for (const auto& [name, spec] : model) {
    if (!seen.contains(name)) missing.push_back(name);
  }
  if (extra.empty() && changed.empty() && missing.empty()) return absl::OkStatus();
  auto list = [](const char* what, std::vector<std::string> v) -> std::string {
    if (v.empty()) return "";
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    if (n > 5) v.resize(5);
    return absl::StrCat("; ", n, " ", what, ": ", absl::StrJoin(v, ", "), n > 5 ? ", ..." : "");
  };
  return absl::FailedPreconditionError(absl::StrCat(
      "version ", manifest.weight_version, " is not the model committed at version ",
      model_version, list("missing", missing), list("extra", extra), list("changed", changed),
      " (a sender that restarted without registering again? declare a new model with "
      "new_model to change it)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Receiver>> Receiver::Create(const ReceiverOptions& options,
                                                           KeyValueStore* store,
                                                           TransportFactory factory) {
  if (options.rank < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("receiver rank ", options.rank, ": inference ranks follow the senders"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<RankClaim> claim, RankClaim::Acquire(store, options.rank));
  ASSIGN_OR_RETURN(uint64_t seq, LastAnnouncedSeq(*store));
  if (seq > 0) {
    absl::StatusOr<std::string> text = store->Get(AnnounceKey(seq));
    absl::StatusOr<Announcement> a =
        text.ok() ? DecodeAnnouncement(*text) : absl::StatusOr<Announcement>(text.status());
    if (a.ok()) {
      const bool in_flight = absl::IsNotFound(store->Get(DoneKey(seq)).status());
      const bool was_member = store->Get(MemberKey(a->generation, options.rank)).ok();
      if (in_flight && !was_member) {
        // An update announced while this process started, whose group this
        // rank has not joined yet: take part in it.
        --seq;
      } else {
        // The current generation included an earlier process of this rank
        // (or is over): have the coordinator re-form at the next update.
        RETURN_IF_ERROR(store->Set(BrokenKey(a->generation),
                                   absl::StrCat("rank ", options.rank, " (re)joined")));
      }
    }
  }
  auto r = std::unique_ptr<Receiver>(new Receiver(options, store, std::move(factory), seq));
  r->claim_ = std::move(claim);
  r->published_version_ = options.published_version;
  if (options.published_version != 0) {
    // Best effort: status shows it; the next commit writes it again.
    (void)store->Set(PublishedKey(options.rank), absl::StrCat(options.published_version));
  }
  absl::StatusOr<std::string> incarnation = store->Get(kIncarnationKey);
  if (incarnation.ok()) r->incarnation_ = *incarnation;
  return r;
}

void Receiver::Stop() {
  stopped_ = true;
  member_.AbortTransport();
}

absl::StatusOr<std::optional<ReceiveResult>> Receiver::ReceiveNext(Sink& sink,
                                                                   absl::Duration wait) {
  const absl::Time deadline = absl::Now() + wait;
  while (true) {
    if (stopped_) {
      // Stopped on purpose with an update announced that this rank has not
      // joined: the others would wait for its join until their timeout.
      const absl::Time quick = absl::Now() + kPoll;
      absl::StatusOr<uint64_t> last = LastAnnouncedSeq(*store_, quick);
      if (last.ok() && *last > seq_ && absl::IsNotFound(store_->Get(DoneKey(*last), quick).status())) {
        (void)MarkAnnouncedGenerationBroken(
            *store_, absl::StrCat("rank ", options_.rank, " stopped"), quick);
      }
      return absl::CancelledError("receiver stopped");
    }
    if (claim_->lost()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "rank ", options_.rank, " was taken over by another process; this one stops"));
    }
    // Short slices so Stop() is honoured promptly.
    const absl::Time slice = std::min(deadline, absl::Now() + absl::Seconds(1));
    absl::StatusOr<Announcement> a = AwaitAnnouncement(*store_, seq_ + 1, slice);
    if (a.ok()) {
      seq_ = a->seq;
      absl::StatusOr<ReceiveResult> r = RunUpdate(*a, sink);
      if (!r.ok()) return r.status();
      return std::optional<ReceiveResult>(*std::move(r));
    }
    // UNAVAILABLE: sender 0's rendezvous is down (stopped, aborted,
    // restarting). That is the senders' business, not an end of this rank:
    // keep waiting for the next announcement, as for a quiet group.
    if (absl::IsUnavailable(a.status())) {
      absl::SleepFor(std::min(absl::Milliseconds(200), std::max(absl::ZeroDuration(),
                                                                slice - absl::Now())));
    } else if (!absl::IsDeadlineExceeded(a.status())) {
      return a.status();
    } else {
      // More than kUpdatesKept behind (stopped or starved while updates
      // went on without it): what it waits for was collected; take part in
      // the newest update instead.
      absl::StatusOr<uint64_t> last = LastAnnouncedSeq(*store_, absl::Now() + kPoll);
      if (last.ok() && *last > seq_ + 1 &&
          absl::IsNotFound(store_->Get(AnnounceKey(seq_ + 1), absl::Now() + kPoll).status())) {
        seq_ = *last - 1;
      }
    }
    // A coordinator that restarted numbers its announcements from 1 again:
    // follow the new incarnation from its current announcement rather than
    // wait for a sequence number it reaches late.
    // Bounded: with the rendezvous down, Stop() is still honoured promptly.
    absl::StatusOr<std::string> incarnation = store_->Get(kIncarnationKey, absl::Now() + kPoll);
    if (incarnation.ok() && *incarnation != incarnation_) {
      absl::StatusOr<uint64_t> last = LastAnnouncedSeq(*store_, absl::Now() + kPoll);
      if (last.ok()) {
        if (!incarnation_.empty()) seq_ = *last > 0 ? *last - 1 : 0;
        incarnation_ = *incarnation;
        // A new rendezvous knows nothing of what this rank publishes.
        if (published_version_ != 0) {
          (void)store_->Set(PublishedKey(options_.rank), absl::StrCat(published_version_),
                            absl::Now() + kPoll);
        }
      }
    }
    if (absl::Now() >= deadline) return std::optional<ReceiveResult>();
  }
}

absl::Status Receiver::ConsumeBucket(const GlobalManifest& manifest, uint32_t g,
                                     uint64_t weight_version, BucketLanding& landing, Sink& sink) {
  const GlobalBucket& b = manifest.buckets[g];
  ASSIGN_OR_RETURN(const std::byte* payload,
                   landing.Verify(static_cast<int>(g % 2), b, g, weight_version,
                                  landing.device() && sink.TakesDeviceMemory()));
  for (const auto& [t, seg] : manifest.bucket_segments[g]) {
    absl::Status s = sink.Write(t, seg.tensor_offset, payload + seg.bucket_offset, seg.bytes);
    if (!s.ok()) {
      (void)sink.EndBucket();  // done with the slot before it is reused
      return s;
    }
  }
  return sink.EndBucket();
}

absl::StatusOr<BucketLanding*> Receiver::LandingFor(const Transport& transport) {
  if (!transport.IsDeviceMemory()) {
    if (host_landing_ == nullptr) host_landing_ = NewHostBucketLanding();
    return host_landing_.get();
  }
  if (gpu_landing_ == nullptr) {
    absl::StatusOr<std::unique_ptr<BucketLanding>> l = NewCudaBucketLanding(options_.cuda_device);
    if (!l.ok()) {
      return absl::Status(l.status().code(), absl::StrCat("rank ", options_.rank, ": ",
                                                          l.status().message()));
    }
    gpu_landing_ = *std::move(l);
  }
  return gpu_landing_.get();
}

absl::StatusOr<ReceiveResult> Receiver::RunUpdate(const Announcement& a, Sink& sink) {
  const absl::Time start = absl::Now();
  const int rank = options_.rank;
  if (rank < static_cast<int>(a.num_senders) || rank >= static_cast<int>(a.world_size)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "rank ", rank, " is not an inference rank of this group (senders ", a.num_senders,
        ", world ", a.world_size, ")"));
  }
  ReceiveResult result{.weight_version = a.weight_version};
  // Another rank's failure or planned stop ends this update promptly,
  // joining included.
  BrokenWatch watch(member_, a.generation);
  absl::StatusOr<Transport*> joined =
      member_.Join(a, absl::Now() + options_.op_timeout);
  if (!joined.ok()) return joined.status();
  Transport& transport = **joined;

  // Transport failures end this rank's part: abort the sink, mark broken.
  auto fail = [&](const absl::Status& s, bool sink_begun) -> absl::Status {
    if (sink_begun) sink.Abort();
    // Should the others have voted yes without this rank's part of the
    // vote failing for them (it was stopped as the vote ended), the senders
    // learn at once that it holds the previous version, not at their timeout.
    (void)store_->Set(PublishKey(a.seq, rank),
                      EncodePublishReport(published_version_, s.ToString()), absl::Now() + kPoll);
    member_.MarkBroken(s);
    return s;
  };

  absl::StatusOr<GlobalManifest> manifest =
      ExchangeManifests(transport, a.num_senders, a.weight_version, nullptr, options_.op_timeout);
  if (!manifest.ok()) return fail(manifest.status(), false);
  // Without receive buffers this rank cannot take part: leave the group so
  // nobody waits for it.
  size_t max_bucket = 0;
  for (const GlobalBucket& b : manifest->buckets) max_bucket = std::max<size_t>(max_bucket, b.bytes);
  absl::StatusOr<BucketLanding*> landing_or = LandingFor(transport);
  if (landing_or.ok()) {
    if (absl::Status r = (*landing_or)->Reserve(max_bucket + kBucketTrailerBytes); !r.ok()) {
      landing_or = r;
    }
  }
  if (!landing_or.ok()) return fail(landing_or.status(), false);
  BucketLanding& landing = **landing_or;

  // From here on a local problem (bad bucket, sink error) does not leave the
  // collective: this rank keeps receiving and votes 0, so the group stays
  // in step and usable.
  sink.SetWriteDevice(landing.device() && sink.TakesDeviceMemory() ? options_.cuda_device : -1);
  absl::Status local = model_version_ != 0 && !a.new_model
                           ? CheckSameModel(model_, model_version_, *manifest)
                           : absl::OkStatus();
  if (local.ok()) local = sink.Begin(*manifest);
  const bool begun = local.ok();
  // Two landing slots: bucket g is verified and handed to the sink on a
  // worker while bucket g+1 arrives. Sink calls stay serialized (the next
  // consumption starts only after the previous one ended).
  std::future<absl::Status> consuming;
  auto settle = [&] {
    if (!consuming.valid()) return;
    absl::Status s = consuming.get();
    if (local.ok()) local = s;
  };
  const bool fault_version =
      options_.test_fault_version == 0 || options_.test_fault_version == a.weight_version;
  for (uint32_t g = 0; g < manifest->buckets.size(); ++g) {
    const GlobalBucket& b = manifest->buckets[g];
    const int slot = static_cast<int>(g % 2);
    absl::Status st = BroadcastBucket(transport, landing.slot(slot), b.bytes + kBucketTrailerBytes,
                                      b.root, a.num_senders, a.seq, g,
                                      absl::Now() + options_.op_timeout);
    if (!st.ok()) {
      settle();
      return fail(st, begun);
    }
    if (fault_version && static_cast<int>(g) == options_.test_corrupt_bucket && b.bytes > 0) {
      if (absl::Status f = landing.FlipBit(slot, b.bytes / 2); !f.ok() && local.ok()) local = f;
    }
    if (fault_version && static_cast<int>(g) == options_.test_exit_after_bucket) {
      std::_Exit(3);
    }
    settle();
    if (!local.ok()) continue;
    consuming = std::async(std::launch::async, [this, g, &landing, &manifest, &a, &sink] {
      return ConsumeBucket(*manifest, g, a.weight_version, landing, sink);
    });
  }
  settle();
  // Everything that can fail short of publishing fails now, before the vote.
  if (local.ok()) local = sink.Prepare();
  if (!local.ok()) {
    // Tell the senders why before voting (best effort).
    (void)store_->Set(ErrorKey(a.seq, rank), std::string(local.ToString()));
  }
  absl::StatusOr<int64_t> vote =
      transport.AllReduceMin(local.ok() ? 1 : 0, absl::Now() + options_.op_timeout);
  if (!vote.ok()) return fail(vote.status(), begun);
  result.bytes = manifest->payload_bytes;
  if (*vote != 1) {
    if (begun) sink.Abort();
    result.reason = local.ok() ? "another rank voted to abort" : std::string(local.ToString());
    result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    return result;
  }
  absl::StatusOr<std::string> where =
      fault_version && options_.test_fail_publish
          ? absl::StatusOr<std::string>(absl::InternalError("test: publishing fails"))
          : sink.Commit();
  if (!where.ok()) {
    sink.Abort();
    const absl::Status failed(where.status().code(),
                              absl::StrCat("rank ", rank, " could not publish version ",
                                           a.weight_version, ": ", where.status().message()));
    // The senders wait for this report: they say which ranks hold what.
    (void)store_->Set(PublishKey(a.seq, rank),
                      EncodePublishReport(published_version_, std::string(failed.message())),
                      absl::Now() + kPoll);
    return failed;
  }
  published_version_ = a.weight_version;
  (void)store_->Set(PublishedKey(rank), absl::StrCat(a.weight_version), absl::Now() + kPoll);
  (void)store_->Set(PublishKey(a.seq, rank), EncodePublishReport(a.weight_version, ""),
                    absl::Now() + kPoll);
  result.committed = true;
  result.location = *where;
  model_.clear();
  for (const ManifestTensor& t : manifest->tensors) model_.emplace(t.spec.name, t.spec);
  model_version_ = a.weight_version;
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return result;
}

}  // namespace weightcast
