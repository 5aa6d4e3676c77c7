#include "protocol/rank_claim.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace weightcast {

std::string ClaimKey(int rank) { return absl::StrCat("claim/", rank); }

namespace {

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "?";
  return name;
}

// "<host>/<pid>/<random>" of a process on this host that no longer exists:
// its claim is stale now, no need to watch its beat.
bool HolderIsGone(const std::string& value) {
  const std::vector<std::string> parts = absl::StrSplit(value.substr(0, value.find(' ')), '/');
  int pid = 0;
  if (parts.size() != 3 || parts[0] != HostName() || !absl::SimpleAtoi(parts[1], &pid) || pid <= 0) {
    return false;
  }
  return kill(pid, 0) != 0 && errno == ESRCH;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RankClaim>> RankClaim::Acquire(KeyValueStore* store, int rank,
                                                              absl::Duration period) {
  std::random_device rd;
  std::string instance = absl::StrCat(HostName(), "/", ::getpid(), "/", rd(), rd());
  absl::StatusOr<std::string> held = store->Get(ClaimKey(rank));
  if (!held.ok() && !absl::IsNotFound(held.status())) return held.status();
  if (held.ok() && !HolderIsGone(*held)) {
    // Somebody held it: alive if its beat moves within the window (a
    // holder on this host that no longer exists is known dead at once).
    const absl::Time until = absl::Now() + kStaleBeats * period + period / 2;
    while (absl::Now() < until) {
      absl::SleepFor(period / 4);
      absl::StatusOr<std::string> now = store->Get(ClaimKey(rank));
      if (absl::IsNotFound(now.status())) break;  // released meanwhile
      if (!now.ok()) return now.status();
      if (*now != *held) {
        const std::string owner = now->substr(0, now->find(' '));
        return absl::AlreadyExistsError(absl::StrCat(
            "rank ", rank, " is held by another running process (instance ", owner,
            "): two processes cannot be one rank"));
      }
    }
  }
  std::unique_ptr<RankClaim> c(new RankClaim(store, rank, std::move(instance), period));
  c->beat_ = 1;
  if (absl::Status s = store->Set(ClaimKey(rank), absl::StrCat(c->instance_, " 1")); !s.ok()) {
    return s;
  }
  c->thread_ = std::thread([p = c.get()] {
    while (!p->stop_.WaitForNotificationWithTimeout(p->period_)) p->Beat();
  });
  return c;
}

RankClaim::RankClaim(KeyValueStore* store, int rank, std::string instance, absl::Duration period)
    : store_(store), rank_(rank), instance_(std::move(instance)), period_(period) {}

void RankClaim::Beat() {
  if (lost_) return;
  // Each call bounded by one period: a store that is down (sender 0
  // restarting) is tried again at the next beat, and a stop is never held.
  absl::StatusOr<std::string> held = store_->Get(ClaimKey(rank_), absl::Now() + period_);
  // Another process's value: it took the rank over. Absent: the
  // rendezvous restarted (a new, empty store): claim it again.
  if (held.ok() && !absl::StartsWith(*held, instance_ + " ")) {
    lost_ = true;
    return;
  }
  if (!held.ok() && !absl::IsNotFound(held.status())) return;  // store down: next beat
  (void)store_->Set(ClaimKey(rank_), absl::StrCat(instance_, " ", ++beat_),
                    absl::Now() + period_);
}

RankClaim::~RankClaim() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
  if (lost_) return;
  // Best effort and brief: a stop must not wait for a rendezvous that is
  // gone (the claim then goes stale and is taken over).
  const absl::Time deadline = absl::Now() + period_;
  absl::StatusOr<std::string> held = store_->Get(ClaimKey(rank_), deadline);
  if (held.ok() && absl::StartsWith(*held, instance_ + " ")) {
    (void)store_->Erase({ClaimKey(rank_)}, deadline);
  }
}

}  // namespace weightcast
