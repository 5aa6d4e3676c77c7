// One process's hold on a rank of the group: "claim/<rank>" = "<instance>
// <beat>", its beat counted up every `period` by a heartbeat thread. A
// second process asking for a rank a live process holds is refused (two
// processes of one rank used to take turns receiving versions); a claim
// whose beat stopped (its process died) is taken over, so a restart after a
// crash gets in (at once when the dead holder was on this host, else after
// kStaleBeats). The values are compared, never clocks: hosts may disagree
// on the time. Instances are "<host>/<pid>/<random>".
#ifndef WEIGHTCAST_PROTOCOL_RANK_CLAIM_H_
#define WEIGHTCAST_PROTOCOL_RANK_CLAIM_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "protocol/group.h"

namespace weightcast {

std::string ClaimKey(int rank);

class RankClaim {
 public:
  // Takes `rank` for this process. Watches an existing claim of another
  // process for kStaleBeats periods: ALREADY_EXISTS naming the rank when its
  // beat moved, otherwise takes it over. Store errors are returned as they
  // are (UNAVAILABLE while the rendezvous is down).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RankClaim>> Acquire(
      KeyValueStore* store, int rank, absl::Duration period = absl::Seconds(1));
  // Stops the heartbeat and erases the claim if it is still this process's.
  ~RankClaim();
  RankClaim(const RankClaim&) = delete;
  RankClaim& operator=(const RankClaim&) = delete;

  // Another process took the rank over (this one stalled for longer than
  // the staleness window, or a second process raced it).
  [[nodiscard]] bool lost() const { return lost_.load(); }
  [[nodiscard]] const std::string& instance() const { return instance_; }

  static constexpr int kStaleBeats = 3;

 private:
  RankClaim(KeyValueStore* store, int rank, std::string instance, absl::Duration period);
  void Beat();

  KeyValueStore* store_;
  int rank_;
  std::string instance_;
  absl::Duration period_;
  uint64_t beat_ = 0;
  std::atomic<bool> lost_{false};
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_PROTOCOL_RANK_CLAIM_H_
