#include "protocol/group.h"

#include <unistd.h>

#include <algorithm>
#include <random>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace weightcast {

std::string EncodeAnnouncement(const Announcement& a) {
  return absl::StrCat("seq=", a.seq, "\ngeneration=", a.generation, "\nversion=",
                      a.weight_version, "\nsenders=", a.num_senders, "\nworld=", a.world_size,
                      "\ntransport=", a.transport, "\n", a.new_model ? "new_model=1\n" : "");
}

absl::StatusOr<Announcement> DecodeAnnouncement(const std::string& text) {
  Announcement a;
  // Each field at most once: a repeated one must not stand in for a missing
  // one (the six required fields are counted by name, not by line).
  absl::flat_hash_set<std::string> seen;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    const std::string& k = kv.first;
    const std::string& v = kv.second;
    bool ok = true;
    if (k == "seq") {
      ok = absl::SimpleAtoi(v, &a.seq);
    } else if (k == "generation") {
      ok = absl::SimpleAtoi(v, &a.generation);
    } else if (k == "version") {
      ok = absl::SimpleAtoi(v, &a.weight_version);
    } else if (k == "senders") {
      ok = absl::SimpleAtoi(v, &a.num_senders);
    } else if (k == "world") {
      ok = absl::SimpleAtoi(v, &a.world_size);
    } else if (k == "transport") {
      a.transport = v;
      ok = v == "gloo" || v == "nccl";
    } else if (k == "new_model") {  // optional
      ok = v == "1";
      a.new_model = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("announcement: unknown field '", k, "'"));
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("announcement: bad value for ", k));
    }
    if (!seen.insert(k).second) {
      return absl::InvalidArgumentError(absl::StrCat("announcement: repeated field ", k));
    }
  }
  if (seen.size() - (a.new_model ? 1 : 0) != 6 || a.seq == 0 || a.generation == 0 ||
      a.num_senders == 0 || a.world_size <= a.num_senders) {
    return absl::InvalidArgumentError("announcement: missing or inconsistent fields");
  }
  return a;
}

std::string AnnounceKey(uint64_t seq) { return absl::StrCat("announce/", seq); }
std::string UpdateKey(uint64_t v) { return absl::StrCat("update/", v); }
std::string BrokenKey(uint64_t g) { return absl::StrCat("broken/", g); }
std::string ErrorKey(uint64_t seq, int rank) { return absl::StrCat("error/", seq, "/", rank); }
std::string GenerationPrefix(uint64_t g) { return absl::StrCat("g", g, "/"); }
std::string MemberKey(uint64_t g, int rank) {
  return absl::StrCat(GenerationPrefix(g), "member/", rank);
}
std::string DoneKey(uint64_t seq) { return absl::StrCat("done/", seq); }
std::string PublishKey(uint64_t seq, int rank) {
  return absl::StrCat("publish/", seq, "/", rank);
}
std::string PublishedKey(int rank) { return absl::StrCat("published/", rank); }

std::string EncodePublishReport(uint64_t version, const std::string& error) {
  return error.empty() ? absl::StrCat(version) : absl::StrCat(version, " ", error);
}

absl::StatusOr<RankVersion> DecodePublishReport(int rank, const std::string& text) {
  const size_t space = text.find(' ');
  RankVersion r{.rank = static_cast<uint32_t>(rank)};
  if (!absl::SimpleAtoi(text.substr(0, space), &r.version) ||
      (space != std::string::npos && space + 1 == text.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous: malformed publish report of rank ", rank));
  }
  if (space != std::string::npos) r.error = text.substr(space + 1);
  return r;
}

std::vector<RankVersion> PublishedVersions(KeyValueStore& store, int first, int end,
                                           absl::Time deadline) {
  std::vector<RankVersion> out;
  for (int r = first; r < end; ++r) {
    RankVersion v{.rank = static_cast<uint32_t>(r)};
    absl::StatusOr<std::string> text = store.Get(PublishedKey(r), deadline);
    if (text.ok() && !absl::SimpleAtoi(*text, &v.version)) v.error = "malformed published key";
    if (!text.ok() && !absl::IsNotFound(text.status())) v.error = std::string(text.status().message());
    out.push_back(std::move(v));
  }
  return out;
}

std::vector<RankVersion> CollectPublishReports(KeyValueStore& store, uint64_t seq, int first,
                                               int end, absl::Time deadline) {
  std::vector<std::string> keys;
  for (int r = first; r < end; ++r) keys.push_back(PublishKey(seq, r));
  // In slices, so that a rendezvous that went away (sender 0 stopped after
  // the vote) ends the wait at once instead of at the deadline.
  bool reachable = true;
  while (absl::Now() < deadline) {
    const absl::Time slice = std::min(deadline, absl::Now() + absl::Milliseconds(250));
    absl::Status waited = store.Wait(keys, slice);
    if (waited.ok()) break;
    if (!absl::IsDeadlineExceeded(waited) ||
        absl::IsUnavailable(store.Get(kSeqKey, absl::Now() + absl::Milliseconds(250)).status())) {
      reachable = false;
      break;
    }
  }
  std::vector<RankVersion> out;
  // Who is missing shows below; with the store gone, briefly.
  const absl::Time get_by = reachable ? std::max(deadline, absl::Now() + absl::Seconds(2))
                                      : absl::Now() + absl::Milliseconds(500);
  for (int r = first; r < end; ++r) {
    absl::StatusOr<std::string> text = store.Get(PublishKey(seq, r), get_by);
    absl::StatusOr<RankVersion> v =
        text.ok() ? DecodePublishReport(r, *text) : absl::StatusOr<RankVersion>(text.status());
    if (v.ok()) {
      out.push_back(*std::move(v));
      continue;
    }
    std::vector<RankVersion> last = PublishedVersions(store, r, r + 1, get_by);
    last[0].error = absl::IsNotFound(v.status())
                        ? "no report that it published (stopped or stalled after the vote?)"
                        : std::string(v.status().message());
    out.push_back(std::move(last[0]));
  }
  return out;
}

GroupMember::GroupMember(KeyValueStore* store, TransportFactory factory, int rank)
    : store_(store), factory_(std::move(factory)), rank_(rank) {
  std::random_device rd;
  instance_ = absl::StrCat(::getpid(), "-", rd(), rd());
}

absl::StatusOr<Transport*> GroupMember::Join(const Announcement& a, absl::Time deadline) {
  const uint64_t generation = a.generation;
  const int world_size = static_cast<int>(a.world_size);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (transport_ != nullptr && generation_ == generation && kind_ == a.transport &&
        transport_->healthy() && transport_->world_size() == world_size) {
      return transport_.get();
    }
    transport_.reset();
  }
  join_cancelled_ = cancelled_.load();
  generation_ = generation;
  if (cancelled_) {
    // Stopped on purpose with this announcement in hand: the peers would
    // wait for this rank's join until their timeout.
    absl::Status s = absl::AbortedError(absl::StrCat("rank ", rank_, ": aborted before joining"));
    MarkBroken(s);
    return s;
  }
  absl::StatusOr<std::string> member = store_->Get(MemberKey(generation, rank_));
  if (member.ok() && *member != instance_) {
    absl::Status s = absl::AbortedError(absl::StrCat(
        "rank ", rank_, ": generation ", generation,
        " already had this rank from an earlier process; waiting for the next one"));
    MarkBroken(s);
    return s;
  }
  if (!member.ok() && !absl::IsNotFound(member.status())) return member.status();
  RETURN_IF_ERROR(store_->Set(MemberKey(generation, rank_), instance_));
  absl::StatusOr<std::unique_ptr<Transport>> t = factory_(
      TransportRequest{.generation = generation,
                       .rank = rank_,
                       .world_size = world_size,
                       .num_senders = a.num_senders,
                       .kind = a.transport,
                       .deadline = deadline},
      join_cancelled_);
  if (!t.ok()) {
    if (cancelled_) {
      // A planned stop while joining: the peers must not wait for this rank.
      absl::Status s = absl::AbortedError(absl::StrCat("rank ", rank_, ": aborted while joining"));
      MarkBroken(s);
      return s;
    }
    if (join_cancelled_) {
      return absl::AbortedError(absl::StrCat("rank ", rank_, " joining generation ", generation,
                                             ": another rank marked it broken"));
    }
    MarkBroken(t.status());
    return absl::Status(t.status().code(),
                        absl::StrCat("rank ", rank_, " joining generation ", generation, ": ",
                                     t.status().message()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  transport_ = std::move(*t);
  kind_ = a.transport;
  return transport_.get();
}

void GroupMember::MarkBroken(const absl::Status& why) {
  if (generation_ != 0) {
    // Best effort: if the store is unreachable the coordinator also notices
    // its own failure and moves on.
    // Best effort, briefly: the rendezvous may be what broke.
    (void)store_->Set(BrokenKey(generation_), absl::StrCat("rank ", rank_, ": ", why.ToString()),
                      absl::Now() + absl::Seconds(2));
  }
  std::shared_ptr<Transport> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dropped = std::move(transport_);
  }
  if (dropped) dropped->Abort();
}

void GroupMember::AbortTransport() {
  cancelled_ = true;
  join_cancelled_ = true;
  std::shared_ptr<Transport> t;
  {
    std::lock_guard<std::mutex> lock(mu_);
    t = transport_;
  }
  if (t) t->Abort();
}

void GroupMember::AbortCurrentTransport() {
  join_cancelled_ = true;
  std::shared_ptr<Transport> t;
  {
    std::lock_guard<std::mutex> lock(mu_);
    t = transport_;
  }
  if (t) t->Abort();
}

BrokenWatch::BrokenWatch(GroupMember& member, uint64_t generation, absl::Duration poll)
    : thread_([this, &member, generation, poll] {
        while (!stop_.WaitForNotificationWithTimeout(poll)) {
          absl::StatusOr<std::string> broken =
              member.store()->Get(BrokenKey(generation), absl::Now() + poll);
          // Again at every poll: a Join that starts after the mark resets
          // the member's join cancellation.
          if (broken.ok()) member.AbortCurrentTransport();
        }
      }) {}

BrokenWatch::~BrokenWatch() {
  stop_.Notify();
  thread_.join();
}

bool GroupMember::healthy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return transport_ != nullptr && transport_->healthy();
}

absl::StatusOr<uint64_t> LastAnnouncedSeq(KeyValueStore& store, absl::Time deadline) {
  absl::StatusOr<std::string> v = store.Get(kSeqKey, deadline);
  if (absl::IsNotFound(v.status())) return 0;
  if (!v.ok()) return v.status();
  uint64_t seq = 0;
  if (!absl::SimpleAtoi(*v, &seq)) {
    return absl::InvalidArgumentError("rendezvous key 'seq' is not a number");
  }
  return seq;
}

absl::StatusOr<Announcement> AnnounceUpdate(GroupMember& member, uint64_t weight_version,
                                            uint32_t num_senders, uint32_t world_size,
                                            const std::string& transport, bool new_model) {
  KeyValueStore& store = *member.store();
  ASSIGN_OR_RETURN(uint64_t seq, LastAnnouncedSeq(store));
  uint64_t generation = member.generation();
  bool fresh = generation == 0 || !member.healthy();
  if (!fresh) {
    absl::StatusOr<std::string> broken = store.Get(BrokenKey(generation));
    if (broken.ok()) {
      fresh = true;
    } else if (!absl::IsNotFound(broken.status())) {
      return broken.status();
    }
  }
  if (fresh) {
    // Never reuse a generation another coordinator incarnation may have used.
    uint64_t last_gen = generation;
    if (seq > 0) {
      absl::StatusOr<std::string> prev = store.Get(AnnounceKey(seq));
      if (prev.ok()) {
        absl::StatusOr<Announcement> a = DecodeAnnouncement(*prev);
        if (a.ok()) last_gen = std::max(last_gen, a->generation);
      }
    }
    // A coordinator that restarted has a fresh store: start above any
    // generation a surviving rank may still hold (time-based, monotonic
    // across restarts), so a stale communicator is never taken for current.
    generation = std::max<uint64_t>(last_gen + 1, absl::ToUnixMillis(absl::Now()));
  }
  if (fresh && member.generation() != 0) {
    // The abandoned generation's addresses are of no use to anyone now.
    (void)store.ErasePrefix(GenerationPrefix(member.generation()));
  }
  Announcement a{.seq = seq + 1,
                 .generation = generation,
                 .weight_version = weight_version,
                 .num_senders = num_senders,
                 .world_size = world_size,
                 .transport = transport,
                 .new_model = new_model};
  RETURN_IF_ERROR(store.Set(AnnounceKey(a.seq), EncodeAnnouncement(a)));
  RETURN_IF_ERROR(store.Set(UpdateKey(weight_version), absl::StrCat(a.seq)));
  RETURN_IF_ERROR(store.Set(kSeqKey, absl::StrCat(a.seq)));
  if (a.seq > kUpdatesKept) CollectUpdate(store, a.seq - kUpdatesKept);
  return a;
}

absl::Status MarkEarlierProcessGone(KeyValueStore& store, int rank) {
  ASSIGN_OR_RETURN(uint64_t seq, LastAnnouncedSeq(store));
  if (seq == 0) return absl::OkStatus();
  absl::StatusOr<std::string> text = store.Get(AnnounceKey(seq));
  if (!text.ok()) return absl::IsNotFound(text.status()) ? absl::OkStatus() : text.status();
  absl::StatusOr<Announcement> a = DecodeAnnouncement(*text);
  if (!a.ok()) return absl::OkStatus();
  if (!store.Get(MemberKey(a->generation, rank)).ok()) return absl::OkStatus();
  return store.Set(BrokenKey(a->generation), absl::StrCat("rank ", rank, " (re)joined"));
}

absl::Status MarkAnnouncedGenerationBroken(KeyValueStore& store, const std::string& why,
                                           absl::Time deadline) {
  ASSIGN_OR_RETURN(uint64_t seq, LastAnnouncedSeq(store, deadline));
  if (seq == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string text, store.Get(AnnounceKey(seq), deadline));
  ASSIGN_OR_RETURN(Announcement a, DecodeAnnouncement(text));
  return store.Set(BrokenKey(a.generation), why, deadline);
}

void CollectUpdate(KeyValueStore& store, uint64_t seq) {
  std::vector<std::string> keys = {AnnounceKey(seq), DoneKey(seq)};
  absl::StatusOr<std::string> text = store.Get(AnnounceKey(seq));
  absl::StatusOr<Announcement> a =
      text.ok() ? DecodeAnnouncement(*text) : absl::StatusOr<Announcement>(text.status());
  if (a.ok()) {
    // A retry of the same version points its key at the newer attempt.
    absl::StatusOr<std::string> points_at = store.Get(UpdateKey(a->weight_version));
    if (points_at.ok() && *points_at == absl::StrCat(seq)) {
      keys.push_back(UpdateKey(a->weight_version));
    }
  }
  // Best effort: a key left behind costs a slot, never correctness.
  (void)store.Erase(keys);
  (void)store.ErasePrefix(absl::StrCat("error/", seq, "/"));
  (void)store.ErasePrefix(absl::StrCat("publish/", seq, "/"));
}

absl::StatusOr<Announcement> AwaitAnnouncement(KeyValueStore& store, uint64_t seq,
                                               absl::Time deadline) {
  RETURN_IF_ERROR(store.Wait({AnnounceKey(seq)}, deadline));
  ASSIGN_OR_RETURN(std::string text, store.Get(AnnounceKey(seq)));
  return DecodeAnnouncement(text);
}

absl::StatusOr<Announcement> AwaitUpdate(KeyValueStore& store, uint64_t weight_version,
                                         uint64_t after_seq, absl::Time deadline) {
  while (true) {
    absl::Status waited = store.Wait({UpdateKey(weight_version)}, deadline);
    if (!waited.ok()) {
      return absl::Status(waited.code(),
                          absl::StrCat("waiting for sender 0 to announce version ",
                                       weight_version, ": ", waited.message()));
    }
    ASSIGN_OR_RETURN(std::string seq_text, store.Get(UpdateKey(weight_version)));
    uint64_t seq = 0;
    if (!absl::SimpleAtoi(seq_text, &seq)) {
      return absl::InvalidArgumentError("rendezvous: malformed update key");
    }
    if (seq > after_seq) return AwaitAnnouncement(store, seq, deadline);
    // A stale key from a failed attempt at the same version: wait for the
    // coordinator to announce the retry.
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "waiting for sender 0 to announce a new attempt at version ", weight_version));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

}  // namespace weightcast
