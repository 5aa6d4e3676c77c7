// RankClaim over a real rendezvous server on loopback.
#include "protocol/rank_claim.h"

#include <sys/wait.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "protocol/rendezvous_store.h"

namespace weightcast {
namespace {

constexpr absl::Duration kPeriod = absl::Milliseconds(50);

class RankClaimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = RendezvousServer::Start("127.0.0.1", 0, "tok");
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    store_ = std::make_unique<RendezvousKeyValueStore>(
        absl::StrCat("127.0.0.1:", server_->bound_port()), "tok");
  }
  std::unique_ptr<RendezvousServer> server_;
  std::unique_ptr<RendezvousKeyValueStore> store_;
};

TEST_F(RankClaimTest, ASecondLiveProcessOfARankIsRefused) {
  auto a = RankClaim::Acquire(store_.get(), 3, kPeriod);
  ASSERT_TRUE(a.ok()) << a.status();
  const absl::Time t0 = absl::Now();
  auto b = RankClaim::Acquire(store_.get(), 3, kPeriod);
  ASSERT_EQ(b.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(b.status().message().find("rank 3 is held by another running process (instance " +
                                      (*a)->instance() + ")"),
            std::string::npos)
      << b.status();
  EXPECT_LT(absl::Now() - t0, (RankClaim::kStaleBeats + 1) * kPeriod);
  // Another rank is free; the holder's claim goes with it.
  EXPECT_TRUE(RankClaim::Acquire(store_.get(), 4, kPeriod).ok());
  a->reset();
  EXPECT_TRUE(absl::IsNotFound(store_->Get(ClaimKey(3)).status()));
  EXPECT_TRUE(RankClaim::Acquire(store_.get(), 3, kPeriod).ok());
}

TEST_F(RankClaimTest, AClaimWhoseBeatStoppedIsTakenOver) {
  // What a process that died (SIGKILL) leaves behind.
  ASSERT_TRUE(store_->Set(ClaimKey(5), "another-host/4242/1 17").ok());
  const absl::Time t0 = absl::Now();
  auto c = RankClaim::Acquire(store_.get(), 5, kPeriod);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_GE(absl::Now() - t0, RankClaim::kStaleBeats * kPeriod);
  absl::SleepFor(3 * kPeriod);
  auto held = store_->Get(ClaimKey(5));
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(held->rfind((*c)->instance() + " ", 0), 0u) << *held;
  EXPECT_NE(*held, (*c)->instance() + " 1") << "the beat moves";
  EXPECT_FALSE((*c)->lost());
}

TEST_F(RankClaimTest, ADeadHolderOnThisHostIsTakenOverAtOnce) {
  // A process of this host that has exited (a child we reaped).
  const pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(waitpid(child, nullptr, 0), child);
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  ASSERT_TRUE(store_->Set(ClaimKey(7), absl::StrCat(host, "/", child, "/9 40")).ok());
  const absl::Time t0 = absl::Now();
  auto c = RankClaim::Acquire(store_.get(), 7, kPeriod);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_LT(absl::Now() - t0, RankClaim::kStaleBeats * kPeriod) << "not watched";
  // A live holder of this host (this process) is still watched and refused.
  auto again = RankClaim::Acquire(store_.get(), 7, kPeriod);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(RankClaimTest, AHolderWhoseRankWasTakenOverKnows) {
  auto c = RankClaim::Acquire(store_.get(), 6, kPeriod);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(store_->Set(ClaimKey(6), "other-process 1").ok());
  absl::SleepFor(3 * kPeriod);
  EXPECT_TRUE((*c)->lost());
  c->reset();  // does not erase the other process's claim
  EXPECT_EQ(store_->Get(ClaimKey(6)).value(), "other-process 1");
}

}  // namespace
}  // namespace weightcast
