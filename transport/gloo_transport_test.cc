#include "transport/gloo_transport.h"

#include <numeric>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

class GlooTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = RendezvousServer::Start("127.0.0.1", 0, "secret");
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    address_ = absl::StrCat("127.0.0.1:", server_->bound_port());
  }

  // Connects `world` ranks (as threads) under `prefix`.
  std::vector<std::unique_ptr<GlooTransport>> Group(int world, const std::string& prefix) {
    std::vector<std::unique_ptr<GlooTransport>> out(world);
    std::vector<std::unique_ptr<RendezvousClient>> clients;
    for (int r = 0; r < world; ++r) clients.push_back(std::make_unique<RendezvousClient>(address_, "secret"));
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) {
      threads.emplace_back([&, r] {
        auto t = GlooTransport::Connect({.rendezvous = clients[r].get(), .key_prefix = prefix,
                                         .rank = r, .world_size = world,
                                         .deadline = absl::Now() + absl::Seconds(10)});
        ASSERT_TRUE(t.ok()) << t.status();
        out[r] = std::move(*t);
      });
    }
    for (auto& t : threads) t.join();
    return out;
  }

  std::unique_ptr<RendezvousServer> server_;
  std::string address_;
};

TEST_F(GlooTransportTest, RendezvousStoreSemanticsAndToken) {
  RendezvousClient c(address_, "secret");
  ASSERT_TRUE(c.Set("a", "1").ok());
  EXPECT_EQ(c.Get("a").value(), "1");
  EXPECT_EQ(c.Get("b").status().code(), absl::StatusCode::kNotFound);
  const absl::Time t0 = absl::Now();
  absl::Status w = c.Wait({"a", "b"}, absl::Now() + absl::Milliseconds(300));
  EXPECT_EQ(w.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(w.message().find("b"), std::string::npos);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(3));
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(100));
    ASSERT_TRUE(c.Set("b", "2").ok());
  });
  EXPECT_TRUE(c.Wait({"a", "b"}, absl::Now() + absl::Seconds(5)).ok());
  setter.join();
  ASSERT_TRUE(c.Set("g9/0", "x").ok());
  ASSERT_TRUE(c.Set("g9/1", "y").ok());
  EXPECT_EQ(c.ErasePrefix("g9/").value(), 2u);
  EXPECT_EQ(c.Get("g9/0").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(c.Get("a").value(), "1");
  EXPECT_EQ(c.ErasePrefix("").status().code(), absl::StatusCode::kInvalidArgument);
  // Exact keys: "done/1" goes, "done/10" (which it prefixes) stays.
  ASSERT_TRUE(c.Set("done/1", "ended").ok());
  ASSERT_TRUE(c.Set("done/10", "ended").ok());
  EXPECT_EQ(c.Erase({"done/1", "never-set"}).value(), 1u);
  EXPECT_EQ(c.Get("done/1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(c.Get("done/10").value(), "ended");
  RendezvousClient intruder(address_, "wrong");
  EXPECT_EQ(intruder.Erase({"done/10"}).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(intruder.Set("x", "y").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(intruder.ErasePrefix("a").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(RendezvousClient(address_, "").Get("a").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(RendezvousServer::Start("127.0.0.1", 0, "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GlooTransportTest, ClientWaitsForALateServer) {
  auto port_probe = RendezvousServer::Start("127.0.0.1", 0, "tok");
  ASSERT_TRUE(port_probe.ok());
  const uint32_t port = (*port_probe)->bound_port();
  (*port_probe)->Shutdown();
  port_probe->reset();
  RendezvousClient c(absl::StrCat("127.0.0.1:", port), "tok");
  std::unique_ptr<RendezvousServer> late;
  std::thread starter([&] {
    absl::SleepFor(absl::Milliseconds(500));
    auto s = RendezvousServer::Start("127.0.0.1", port, "tok");
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->store().Set("k", "v").ok());
    late = std::move(*s);
  });
  EXPECT_TRUE(c.Wait({"k"}, absl::Now() + absl::Seconds(10)).ok());
  starter.join();
  // Nobody there at all: UNAVAILABLE or DEADLINE_EXCEEDED, within the deadline.
  RendezvousClient nobody("127.0.0.1:1", "");
  const absl::Time t0 = absl::Now();
  EXPECT_FALSE(nobody.Set("k", "v", absl::Now() + absl::Seconds(1)).ok());
  EXPECT_LT(absl::Now() - t0, absl::Seconds(4));
}

TEST_F(GlooTransportTest, BroadcastsEverySizeFromEveryRoot) {
  auto g = Group(4, "g1/");
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{4097}, (size_t{20} << 20) + 3}) {
    for (int root = 0; root < 4; ++root) {
      std::vector<std::vector<uint8_t>> bufs(4, std::vector<uint8_t>(bytes));
      std::iota(bufs[root].begin(), bufs[root].end(), static_cast<uint8_t>(root * 7 + bytes));
      std::vector<std::thread> threads;
      for (int r = 0; r < 4; ++r) {
        threads.emplace_back([&, r] {
          absl::Status s = g[r]->Broadcast(bufs[r].data(), bytes, root, absl::Now() + absl::Seconds(20));
          EXPECT_TRUE(s.ok()) << s;
        });
      }
      for (auto& t : threads) t.join();
      for (int r = 0; r < 4; ++r) EXPECT_EQ(bufs[r], bufs[root]) << bytes << " from " << root;
    }
  }
  std::vector<int64_t> mins(4);
  std::vector<std::thread> threads;
  for (int r = 0; r < 4; ++r) {
    threads.emplace_back([&, r] {
      auto m = g[r]->AllReduceMin(r == 2 ? 0 : 1, absl::Now() + absl::Seconds(5));
      ASSERT_TRUE(m.ok()) << m.status();
      mins[r] = *m;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mins, (std::vector<int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(g[0]->Broadcast(nullptr, 8, 5, absl::Now()).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GlooTransportTest, PartialBroadcastSkipsTheOtherSendersAndKeepsStep) {
  auto g = Group(4, "gp/");  // ranks 0, 1 are senders; 2, 3 receive
  for (int round = 0; round < 3; ++round) {
    for (int root = 0; root < 2; ++root) {
      std::vector<std::vector<uint8_t>> bufs(4, std::vector<uint8_t>(5000 + round));
      std::iota(bufs[root].begin(), bufs[root].end(), static_cast<uint8_t>(root + 3 * round));
      std::vector<std::thread> threads;
      for (int r : {root, 2, 3}) {
        threads.emplace_back([&, r] {
          absl::Status s = g[r]->BroadcastToRanks(bufs[r].data(), bufs[r].size(), root, 2,
                                                  round * 2 + root, absl::Now() + absl::Seconds(10));
          EXPECT_TRUE(s.ok()) << s;
        });
      }
      for (auto& t : threads) t.join();
      EXPECT_EQ(bufs[2], bufs[root]);
      EXPECT_EQ(bufs[3], bufs[root]);
      EXPECT_NE(bufs[1 - root], bufs[root]);  // the other sender took no part
    }
  }
  // The full-group collectives are still in step afterwards.
  std::vector<int64_t> mins(4);
  std::vector<std::thread> threads;
  for (int r = 0; r < 4; ++r) {
    threads.emplace_back([&, r] { mins[r] = *g[r]->AllReduceMin(10 + r, absl::Now() + absl::Seconds(5)); });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mins, (std::vector<int64_t>{10, 10, 10, 10}));
  // A sender may not receive another sender's partial broadcast.
  uint8_t x = 0;
  EXPECT_EQ(g[1]->BroadcastToRanks(&x, 1, 0, 2, 99, absl::Now()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GlooTransportTest, ARankThatNeverJoinsFailsConnectInTime) {
  RendezvousClient c(address_, "secret");
  const absl::Time t0 = absl::Now();
  auto t = GlooTransport::Connect({.rendezvous = &c, .key_prefix = "lonely/", .rank = 0,
                                   .world_size = 2, .deadline = absl::Now() + absl::Seconds(2)});
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(t.status()) || absl::IsUnavailable(t.status())) << t.status();
  EXPECT_NE(t.status().message().find("ranks not joined: 1"), std::string::npos) << t.status();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(8));
}

TEST_F(GlooTransportTest, APeerThatStopsMakesOthersFailWithinTheDeadline) {
  auto g = Group(3, "g2/");
  std::vector<uint8_t> buf(1 << 20, 1);
  // Rank 2 goes away (its process died): its sockets close.
  g[2].reset();
  const absl::Time t0 = absl::Now();
  std::thread receiver([&] {
    // Rank 1 may get its copy before the root hits the dead rank, or see the
    // root close its connections: either way it returns in time.
    std::vector<uint8_t> mine(buf.size());
    (void)g[1]->Broadcast(mine.data(), mine.size(), 0, absl::Now() + absl::Seconds(3));
  });
  absl::Status s = g[0]->Broadcast(buf.data(), buf.size(), 0, absl::Now() + absl::Seconds(3));
  receiver.join();
  EXPECT_TRUE(absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) << s;
  EXPECT_LT(absl::Now() - t0, absl::Seconds(6));
  EXPECT_FALSE(g[0]->healthy());
  // A new generation re-forms without the broken one.
  auto g3 = Group(2, "g3/");
  std::vector<uint8_t> a(100, 9), b(100, 0);
  std::thread t1([&] { EXPECT_TRUE(g3[1]->Broadcast(b.data(), 100, 0, absl::Now() + absl::Seconds(5)).ok()); });
  EXPECT_TRUE(g3[0]->Broadcast(a.data(), 100, 0, absl::Now() + absl::Seconds(5)).ok());
  t1.join();
  EXPECT_EQ(a, b);
}

TEST_F(GlooTransportTest, AbortWakesABlockedBroadcastPromptly) {
  auto g = Group(2, "g4/");
  std::vector<uint8_t> buf(1024);
  const absl::Time t0 = absl::Now();
  std::thread aborter([&] {
    absl::SleepFor(absl::Milliseconds(300));
    g[1]->Abort();
  });
  // Rank 0 never sends: rank 1 would wait 30 s without Abort.
  absl::Status s = g[1]->Broadcast(buf.data(), buf.size(), 0, absl::Now() + absl::Seconds(30));
  aborter.join();
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_LT(absl::Now() - t0, absl::Seconds(3));
  EXPECT_FALSE(g[1]->healthy());
  EXPECT_EQ(g[1]->Broadcast(buf.data(), 1, 0, absl::Now()).code(), absl::StatusCode::kAborted);
  // The peer notices the closed connection instead of hanging.
  absl::Status peer = g[0]->Broadcast(buf.data(), buf.size(), 0, absl::Now() + absl::Seconds(5));
  EXPECT_FALSE(peer.ok());
}

TEST_F(GlooTransportTest, DeadlineBoundsAWaitForASilentRoot) {
  auto g = Group(2, "g5/");
  std::vector<uint8_t> buf(64);
  const absl::Time t0 = absl::Now();
  absl::Status s = g[1]->Broadcast(buf.data(), buf.size(), 0, absl::Now() + absl::Seconds(1));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(absl::Now() - t0, absl::Seconds(3));
  EXPECT_NE(s.message().find("from rank 0"), std::string::npos);
}

}  // namespace
}  // namespace weightcast
