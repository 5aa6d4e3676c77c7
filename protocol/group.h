// The group's control protocol over the rendezvous key-value store: which
// update runs next, under which group generation, and who broke what.
//
// Sender rank 0 is the coordinator. For each update it writes
//   "announce/<seq>" = Announcement (generation, weight version, sizes)
//   "update/<version>" = <seq>              (for the other senders)
//   "seq" = <seq>                           (for ranks that (re)join)
// Everybody else waits for those keys. A generation is one incarnation of
// the data-plane communicator (transport keys live under "g<gen>/"). Any
// rank whose transport fails writes "broken/<gen>"; the coordinator starts
// the next update under gen+1 when that key exists or its own transport is
// not healthy, so a rank that died and came back, or a group that timed out,
// re-forms at the next update without anyone restarting.
// Receivers report why they voted against a commit in "error/<seq>/<rank>",
// and after a commit whether they published it in "publish/<seq>/<rank>";
// "published/<rank>" holds the version each receiver rank last published.
#ifndef WEIGHTCAST_PROTOCOL_GROUP_H_
#define WEIGHTCAST_PROTOCOL_GROUP_H_

#include <cstdint>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "transport/transport.h"

namespace weightcast {

// What the group needs of the rendezvous. Implemented over gRPC by
// transport/rendezvous.h; thread-safe.
class KeyValueStore {
 public:
  virtual ~KeyValueStore() = default;
  // Get, Set and Erase give up at `deadline` (InfiniteFuture: the store's
  // own call timeout); heartbeats and cleanup at exit pass a short one.
  [[nodiscard]] virtual absl::Status Set(const std::string& key, const std::string& value,
                                         absl::Time deadline = absl::InfiniteFuture()) = 0;
  // NOT_FOUND when absent; never blocks beyond one round trip.
  [[nodiscard]] virtual absl::StatusOr<std::string> Get(
      const std::string& key, absl::Time deadline = absl::InfiniteFuture()) = 0;
  // Until every key exists; DEADLINE_EXCEEDED naming the missing ones.
  [[nodiscard]] virtual absl::Status Wait(const std::vector<std::string>& keys,
                                          absl::Time deadline) = 0;
  // Removes every key starting with `prefix`.
  [[nodiscard]] virtual absl::Status ErasePrefix(const std::string& prefix) = 0;
  // Removes exactly `keys`; absent ones are no error.
  [[nodiscard]] virtual absl::Status Erase(const std::vector<std::string>& keys,
                                           absl::Time deadline = absl::InfiniteFuture()) = 0;
};

struct Announcement {
  uint64_t seq = 0;
  uint64_t generation = 0;
  uint64_t weight_version = 0;
  uint32_t num_senders = 0;
  uint32_t world_size = 0;
  std::string transport;  // "gloo" or "nccl"
  // The orchestrator declared a new model: receivers take this version's
  // tensor set as the model's instead of refusing one that differs.
  bool new_model = false;
  friend bool operator==(const Announcement&, const Announcement&) = default;
};

[[nodiscard]] std::string EncodeAnnouncement(const Announcement& a);
// INVALID_ARGUMENT on anything malformed.
[[nodiscard]] absl::StatusOr<Announcement> DecodeAnnouncement(const std::string& text);

// Keys, in one place.
std::string AnnounceKey(uint64_t seq);
std::string UpdateKey(uint64_t weight_version);
std::string BrokenKey(uint64_t generation);
std::string ErrorKey(uint64_t seq, int rank);
std::string GenerationPrefix(uint64_t generation);
// "<gen prefix>member/<rank>" = the joining process's instance id: a rank
// never joins a generation an earlier process of the same rank was part of
// (its peers hold connections to the dead one).
std::string MemberKey(uint64_t generation, int rank);
// Set by sender 0 when update `seq` has ended (committed or failed).
std::string DoneKey(uint64_t seq);
// A receiver's report, after the group voted to commit update `seq`, of
// what it published (EncodePublishReport).
std::string PublishKey(uint64_t seq, int rank);
// The version receiver `rank` last published (decimal), kept across updates.
std::string PublishedKey(int rank);

// What one receiver rank holds after an update: the version it publishes
// now (0: none it knows of) and, when it failed to publish the committed
// one, why.
struct RankVersion {
  uint32_t rank = 0;
  uint64_t version = 0;
  std::string error;
  friend bool operator==(const RankVersion&, const RankVersion&) = default;
};
[[nodiscard]] std::string EncodePublishReport(uint64_t version, const std::string& error);
// INVALID_ARGUMENT on anything malformed.
[[nodiscard]] absl::StatusOr<RankVersion> DecodePublishReport(int rank, const std::string& text);

// Waits, until `deadline`, for the publish reports of receiver ranks
// [first, end) of update `seq`; a rank that sent none by then is reported
// with the version it last published and the error "no report".
[[nodiscard]] std::vector<RankVersion> CollectPublishReports(KeyValueStore& store, uint64_t seq,
                                                             int first, int end,
                                                             absl::Time deadline);
// The versions receiver ranks [first, end) last published ("published/"),
// as far as the store answers before `deadline`.
[[nodiscard]] std::vector<RankVersion> PublishedVersions(KeyValueStore& store, int first, int end,
                                                         absl::Time deadline);
// The coordinator keeps the keys of the newest kUpdatesKept updates; when it
// announces update `seq` it collects those of seq - kUpdatesKept (its
// announcement, end marker, receivers' errors, and its version's key if
// that still points at it), so the store stays small across any number of
// updates. A rank that falls further behind skips to the current update.
inline constexpr uint64_t kUpdatesKept = 2;
void CollectUpdate(KeyValueStore& store, uint64_t seq);
inline constexpr char kSeqKey[] = "seq";
// Set by sender 0 when its rendezvous starts: a restarted coordinator is a
// new incarnation whose sequence numbers start again from 1.
inline constexpr char kIncarnationKey[] = "incarnation";

// What a rank asks of a TransportFactory: its transport of one generation.
struct TransportRequest {
  uint64_t generation = 0;
  int rank = 0;
  int world_size = 0;
  uint32_t num_senders = 0;    // ranks [0, num_senders) are senders
  std::string kind = "gloo";   // Announcement::transport
  absl::Time deadline = absl::InfiniteFuture();
};

// Makes the transport of one generation for this rank. It must give up
// (CANCELLED) soon after `cancelled` becomes true. FAILED_PRECONDITION for a
// kind it cannot make.
using TransportFactory = std::function<absl::StatusOr<std::unique_ptr<Transport>>(
    const TransportRequest& request, const std::atomic<bool>& cancelled)>;

// One rank's membership: its transport for the current generation.
// Not thread-safe except AbortTransport(), which any thread may call.
class GroupMember {
 public:
  GroupMember(KeyValueStore* store, TransportFactory factory, int rank);

  // The transport of the announced update's generation, connecting a new
  // one (and dropping the old) when the generation or transport kind changed
  // or the current one is broken. ABORTED (and the generation marked broken)
  // when another process of this rank joined it before.
  [[nodiscard]] absl::StatusOr<Transport*> Join(const Announcement& a, absl::Time deadline);
  // Records that the current generation is broken ("broken/<gen>") with the
  // reason, and drops the transport.
  void MarkBroken(const absl::Status& why);
  // Aborts the transport in use, and a Join in progress (thread-safe); every
  // later Join fails. The owner then calls MarkBroken.
  void AbortTransport();
  // Aborts the transport in use, or the Join in progress, only
  // (thread-safe): its collectives fail promptly, and later Joins connect
  // anew.
  void AbortCurrentTransport();

  // True when a transport exists and is healthy.
  [[nodiscard]] bool healthy() const;
  [[nodiscard]] uint64_t generation() const { return generation_; }
  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] KeyValueStore* store() const { return store_; }
  // This process's id in MemberKey entries.
  [[nodiscard]] const std::string& instance() const { return instance_; }

 private:
  KeyValueStore* store_;
  TransportFactory factory_;
  int rank_;
  std::string instance_;
  uint64_t generation_ = 0;
  std::string kind_;
  std::shared_ptr<Transport> transport_;
  std::atomic<bool> cancelled_{false};
  // Cancels the Join in progress only (AbortCurrentTransport); set again
  // from cancelled_ when a Join starts.
  std::atomic<bool> join_cancelled_{false};
  mutable std::mutex mu_;  // guards transport_ against AbortTransport
};

// Coordinator (sender 0): announces the update of `weight_version` and
// returns the announcement. Starts a new generation when `member` is not
// healthy or the current generation was marked broken, and then erases the
// abandoned generation's transport keys.
[[nodiscard]] absl::StatusOr<Announcement> AnnounceUpdate(GroupMember& member,
                                                          uint64_t weight_version,
                                                          uint32_t num_senders,
                                                          uint32_t world_size,
                                                          const std::string& transport,
                                                          bool new_model = false);

// Other senders: waits for the coordinator's announcement of
// `weight_version` with a sequence number above `after_seq` (the last one
// this sender took part in, so a retried version is not confused with the
// failed attempt).
[[nodiscard]] absl::StatusOr<Announcement> AwaitUpdate(KeyValueStore& store,
                                                       uint64_t weight_version,
                                                       uint64_t after_seq,
                                                       absl::Time deadline);

// Receivers: the announcement with sequence number `seq`, waiting until the
// deadline (DEADLINE_EXCEEDED when none came, which is normal between
// updates: call again).
[[nodiscard]] absl::StatusOr<Announcement> AwaitAnnouncement(KeyValueStore& store, uint64_t seq,
                                                             absl::Time deadline);

// The last announced sequence number (0 when none yet).
[[nodiscard]] absl::StatusOr<uint64_t> LastAnnouncedSeq(
    KeyValueStore& store, absl::Time deadline = absl::InfiniteFuture());

// A process taking over `rank` (a restarted sidecar, a re-initialised one):
// when an earlier process of the rank was a member of the current
// generation, marks that generation broken, so the coordinator re-forms the
// group at the next update instead of that update failing on the dead
// process's connections.
[[nodiscard]] absl::Status MarkEarlierProcessGone(KeyValueStore& store, int rank);

// A rank's planned stop in the middle of an update, before or after it
// joined: marks the generation of the latest announcement broken with
// `why`, so every peer's BrokenWatch ends the update within about a second
// instead of one waiting for this rank's join or collective until its
// timeout. Gives up at `deadline`.
[[nodiscard]] absl::Status MarkAnnouncedGenerationBroken(KeyValueStore& store,
                                                         const std::string& why,
                                                         absl::Time deadline);

// While it lives (one update of one rank, from before its Join), watches
// "broken/<generation>" and, while any rank has marked the generation
// broken, aborts the member's Join in progress or current transport. A rank whose transport failed, or that stopped on
// purpose, marks it; without the watch, ranks whose own collectives did not
// touch the failed one waited out their whole timeout.
class BrokenWatch {
 public:
  BrokenWatch(GroupMember& member, uint64_t generation,
              absl::Duration poll = absl::Milliseconds(250));
  ~BrokenWatch();
  BrokenWatch(const BrokenWatch&) = delete;
  BrokenWatch& operator=(const BrokenWatch&) = delete;

 private:
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_PROTOCOL_GROUP_H_
