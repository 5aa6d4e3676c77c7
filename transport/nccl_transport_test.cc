// NcclTransport on a real GPU (skipped without one): one-rank broadcast and
// all-reduce; init timeout when a peer never joins; and with a second rank
// in a child process (this binary re-executed, its own NCCL_HOSTID, NCCL's
// socket transport over loopback): a two-way broadcast, the commit vote,
// then a broadcast the child never joins ending in DEADLINE_EXCEEDED, or an
// Abort() from another thread ending it in ABORTED.
#include "transport/nccl_transport.h"

#include <cuda_runtime_api.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "kernels/gpu_device.h"

namespace weightcast {
namespace {

constexpr size_t kBytes = (4 << 20) + 3;

void NcclEnv(const char* host_id) {
  setenv("NCCL_HOSTID", host_id, 1);
  setenv("NCCL_SOCKET_IFNAME", "lo", 0);
  setenv("NCCL_IB_DISABLE", "1", 0);
}

std::vector<uint8_t> Pattern(int seed) {
  std::vector<uint8_t> v(kBytes);
  for (size_t i = 0; i < kBytes; ++i) v[i] = static_cast<uint8_t>(i * 13 + seed);
  return v;
}

TEST(NcclTransportTest, OneRankBroadcastAndAllReduce) {
  WC_SKIP_WITHOUT_GPU();
  NcclEnv("host0");
  auto id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  auto t = NcclTransport::Connect({.rank = 0, .world_size = 1, .unique_id = *id, .device = 0,
                                   .deadline = absl::Now() + absl::Seconds(60)});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE((*t)->IsDeviceMemory());
  void* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, kBytes), cudaSuccess);
  const auto want = Pattern(1);
  ASSERT_EQ(cudaMemcpy(d, want.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE((*t)->Broadcast(d, kBytes, 0, absl::Now() + absl::Seconds(30)).ok());
  std::vector<uint8_t> got(kBytes);
  ASSERT_EQ(cudaMemcpy(got.data(), d, kBytes, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got, want);
  auto min = (*t)->AllReduceMin(5, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(min.ok()) << min.status();
  EXPECT_EQ(*min, 5);
  EXPECT_EQ((*t)->Broadcast(d, kBytes, 1, absl::Now() + absl::Seconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*t)->healthy());
  (*t)->Abort();
  (*t)->Abort();  // idempotent
  EXPECT_FALSE((*t)->healthy());
  EXPECT_EQ((*t)->Broadcast(d, kBytes, 0, absl::Now() + absl::Seconds(1)).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ((*t)->AllReduceMin(1, absl::Now() + absl::Seconds(1)).status().code(),
            absl::StatusCode::kAborted);
  cudaFree(d);
}

TEST(NcclTransportTest, ConnectTimesOutWhenAPeerNeverJoins) {
  WC_SKIP_WITHOUT_GPU();
  NcclEnv("host0");
  auto id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  const absl::Time start = absl::Now();
  auto t = NcclTransport::Connect({.rank = 0, .world_size = 2, .unique_id = *id, .device = 0,
                                   .deadline = absl::Now() + absl::Seconds(3)});
  EXPECT_EQ(t.status().code(), absl::StatusCode::kDeadlineExceeded) << t.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
}

TEST(NcclTransportTest, RejectsBadOptions) {
  WC_SKIP_WITHOUT_GPU();
  EXPECT_EQ(NcclTransport::Connect({.rank = 2, .world_size = 2}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NcclTransport::Connect({.rank = 0, .world_size = 1, .device = 4096}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Rank 1, run as a child process by the two-rank tests.
TEST(NcclChild, Rank1) {
  const char* hex = std::getenv("WC_NCCL_CHILD_ID");
  if (hex == nullptr) GTEST_SKIP() << "only run as the NCCL child";
  NcclEnv("host1");
  const std::string bytes = absl::HexStringToBytes(hex);
  NcclOptions o{.rank = 1, .world_size = 2, .device = 0,
                .deadline = absl::Now() + absl::Seconds(60)};
  std::memcpy(o.unique_id.data(), bytes.data(), kNcclUniqueIdBytes);
  auto t = NcclTransport::Connect(o);
  ASSERT_TRUE(t.ok()) << t.status();
  void* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, kBytes), cudaSuccess);
  ASSERT_TRUE((*t)->Broadcast(d, kBytes, 0, absl::Now() + absl::Seconds(60)).ok());
  std::vector<uint8_t> got(kBytes);
  ASSERT_EQ(cudaMemcpy(got.data(), d, kBytes, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(got, Pattern(7));
  const auto mine = Pattern(9);
  ASSERT_EQ(cudaMemcpy(d, mine.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE((*t)->Broadcast(d, kBytes, 1, absl::Now() + absl::Seconds(60)).ok());
  auto min = (*t)->AllReduceMin(0, absl::Now() + absl::Seconds(60));
  ASSERT_TRUE(min.ok()) << min.status();
  ASSERT_EQ(*min, 0);
  // Now play a hung peer: never join the next collective.
  absl::SleepFor(absl::Seconds(60));
}

class NcclTwoRankTest : public ::testing::TestWithParam<bool> {};

TEST_P(NcclTwoRankTest, ExchangeThenHungPeer) {
  WC_SKIP_WITHOUT_GPU();
  const bool abort_instead_of_timeout = GetParam();
  NcclEnv("host0");
  auto id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  const std::string hex = absl::BytesToHexString(absl::string_view(id->data(), id->size()));
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("WC_NCCL_CHILD_ID", hex.c_str(), 1);
    execl("/proc/self/exe", "nccl_transport_test", "--gtest_filter=NcclChild.*", nullptr);
    _exit(127);
  }
  auto t = NcclTransport::Connect({.rank = 0, .world_size = 2, .unique_id = *id, .device = 0,
                                   .deadline = absl::Now() + absl::Seconds(60)});
  ASSERT_TRUE(t.ok()) << t.status();
  void* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, kBytes), cudaSuccess);
  const auto mine = Pattern(7);
  ASSERT_EQ(cudaMemcpy(d, mine.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE((*t)->Broadcast(d, kBytes, 0, absl::Now() + absl::Seconds(60)).ok());
  ASSERT_TRUE((*t)->Broadcast(d, kBytes, 1, absl::Now() + absl::Seconds(60)).ok());
  std::vector<uint8_t> got(kBytes);
  ASSERT_EQ(cudaMemcpy(got.data(), d, kBytes, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got, Pattern(9));
  auto min = (*t)->AllReduceMin(1, absl::Now() + absl::Seconds(60));
  ASSERT_TRUE(min.ok()) << min.status();
  EXPECT_EQ(*min, 0);

  // The child never joins this one.
  const absl::Time start = absl::Now();
  std::thread aborter;
  if (abort_instead_of_timeout) {
    aborter = std::thread([&] {
      absl::SleepFor(absl::Milliseconds(500));
      (*t)->Abort();
    });
  }
  const absl::Status s = (*t)->Broadcast(
      d, kBytes, 0, absl::Now() + (abort_instead_of_timeout ? absl::Seconds(30) : absl::Seconds(2)));
  if (aborter.joinable()) aborter.join();
  EXPECT_EQ(s.code(), abort_instead_of_timeout ? absl::StatusCode::kAborted
                                               : absl::StatusCode::kDeadlineExceeded)
      << s;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_FALSE((*t)->healthy());
  EXPECT_NE((*t)->Broadcast(d, kBytes, 0, absl::Now() + absl::Seconds(1)).code(),
            absl::StatusCode::kOk);
  t->reset();  // destroys an aborted communicator without hanging
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  cudaFree(d);
}

INSTANTIATE_TEST_SUITE_P(Modes, NcclTwoRankTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Abort" : "Timeout"; });

}  // namespace
}  // namespace weightcast
