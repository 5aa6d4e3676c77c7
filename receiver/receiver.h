// Receiver: one inference rank of the group. Waits for each announced
// update, joins the group's generation, receives the manifest and every
// bucket, verifies each bucket's checksum and trailer, hands the bytes to a
// Sink, prepares it, votes, and commits or aborts the sink with everybody
// else. After a commit it reports to the senders what it published
// (protocol/group.h PublishKey), failure included.
//
// Usage:
//   auto r = Receiver::Create(options, store, factory);
//   while (running) { auto result = (*r)->ReceiveNext(sink, absl::Seconds(5)); ... }
// Threading: ReceiveNext on one thread; Stop() from any thread.
#ifndef WEIGHTCAST_RECEIVER_RECEIVER_H_
#define WEIGHTCAST_RECEIVER_RECEIVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "protocol/group.h"
#include "protocol/rank_claim.h"
#include "receiver/bucket_landing.h"
#include "receiver/sink.h"

namespace weightcast {

struct ReceiverOptions {
  int rank = -1;                              // this inference rank's global rank
  int cuda_device = 0;                        // receive buffers when the group uses NCCL
  absl::Duration op_timeout = absl::Seconds(120);  // per collective
  // The version this rank already publishes when it starts (a checkpoint
  // directory's LATEST; 0: none), reported until it publishes another.
  uint64_t published_version = 0;
  // Fault-injection hooks for the tests (-1: off), applied to the update of
  // `test_fault_version` (0: every update):
  // flip one byte of this global bucket after it arrives ("in transit") ...
  int test_corrupt_bucket = -1;
  // ... or exit the process (as a crash would) after receiving this bucket.
  int test_exit_after_bucket = -1;
  // ... or fail to publish after the group voted to commit (true).
  bool test_fail_publish = false;
  uint64_t test_fault_version = 0;
};

struct ReceiveResult {
  uint64_t weight_version = 0;
  bool committed = false;   // false: the group aborted this version
  std::string location;     // the sink's Commit() result
  std::string reason;       // why not committed
  uint64_t bytes = 0;
  double seconds = 0;
};

class Receiver {
 public:
  // `store` and the factory's resources must outlive the receiver. A new
  // receiver claims its rank (ALREADY_EXISTS while another live process
  // holds it, protocol/rank_claim.h), then marks the group's current
  // generation broken, so that a rank that died and came back is let in at
  // the next update.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Receiver>> Create(
      const ReceiverOptions& options, KeyValueStore* store, TransportFactory factory);

  // Waits up to `wait` for the next announcement (nullopt if none came:
  // call again), then runs that update to its end. A version the group
  // aborted is a result with committed == false, not an error; errors are
  // for this rank's own failures (transport, store), after which the sink
  // has been aborted and the next call re-joins. CANCELLED after Stop(),
  // and only then: sender 0's rendezvous going away (a peer's planned stop)
  // is waited out like a quiet group.
  [[nodiscard]] absl::StatusOr<std::optional<ReceiveResult>> ReceiveNext(Sink& sink,
                                                                         absl::Duration wait);

  // Makes a blocked ReceiveNext return CANCELLED/ABORTED soon.
  void Stop();

  // Another process took this rank over: ReceiveNext fails with
  // FAILED_PRECONDITION from then on, and the receiver should end.
  [[nodiscard]] bool rank_lost() const { return claim_->lost(); }

  [[nodiscard]] uint64_t last_seq() const { return seq_; }

 private:
  Receiver(const ReceiverOptions& o, KeyValueStore* s, TransportFactory f, uint64_t seq)
      : options_(o), store_(s), member_(s, std::move(f), o.rank), seq_(seq) {}

  absl::StatusOr<ReceiveResult> RunUpdate(const Announcement& a, Sink& sink);
  // Verifies bucket g (in landing slot g % 2) and hands its segments to the
  // sink. DATA_LOSS naming the bucket and sender on a mismatch.
  absl::Status ConsumeBucket(const GlobalManifest& manifest, uint32_t g, uint64_t weight_version,
                             BucketLanding& landing, Sink& sink);
  // The landing in the transport's memory (made once, kept across updates).
  absl::StatusOr<BucketLanding*> LandingFor(const Transport& transport);

  ReceiverOptions options_;
  KeyValueStore* store_;
  GroupMember member_;
  uint64_t seq_;
  std::string incarnation_;  // of the coordinator seq_ counts in
  std::atomic<bool> stopped_{false};
  std::unique_ptr<BucketLanding> host_landing_;
  std::unique_ptr<BucketLanding> gpu_landing_;
  // The model: the tensors of the last version this rank committed (set by
  // the first one, replaced when an update declares a new model). A later
  // version must hold exactly these.
  absl::flat_hash_map<std::string, TensorSpec> model_;
  uint64_t model_version_ = 0;
  uint64_t published_version_ = 0;  // what this rank publishes now
  std::unique_ptr<RankClaim> claim_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_RECEIVER_H_
