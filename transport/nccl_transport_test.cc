// NcclTransport on a real GPU (skipped without one): one-rank broadcast and
// all-reduce; init timeout when a peer never joins; and with more ranks in
// child processes (this binary re-executed, each rank with its own
// NCCL_HOSTID so NCCL takes them for separate hosts and uses its socket
// transport over loopback, all on GPU 0):
//   - a two-way broadcast, the commit vote, then a broadcast the child never
//     joins ending in DEADLINE_EXCEEDED, or an Abort() from another thread
//     ending it in ABORTED;
//   - BroadcastHost of odd-sized host buffers from every root.
#include "transport/nccl_transport.h"

#include <cuda_runtime_api.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "kernels/gpu_device.h"

extern char** environ;

namespace weightcast {
namespace {

using NcclId = std::array<char, kNcclUniqueIdBytes>;

constexpr size_t kBytes = (4 << 20) + 3;

// Environment of a child rank.
constexpr char kScenarioEnv[] = "WC_NCCL_SCENARIO";
constexpr char kIdEnv[] = "WC_NCCL_CHILD_ID";
constexpr char kRankEnv[] = "WC_NCCL_CHILD_RANK";
constexpr char kWorldEnv[] = "WC_NCCL_CHILD_WORLD";

void NcclEnv(const char* host_id) {
  setenv("NCCL_HOSTID", host_id, 1);
  setenv("NCCL_SOCKET_IFNAME", "lo", 0);
  setenv("NCCL_IB_DISABLE", "1", 0);
}

std::vector<uint8_t> Pattern(size_t bytes, int seed) {
  std::vector<uint8_t> v(bytes);
  for (size_t i = 0; i < bytes; ++i) v[i] = static_cast<uint8_t>(i * 13 + seed);
  return v;
}

std::vector<uint8_t> Pattern(int seed) { return Pattern(kBytes, seed); }

// Host to device, complete on the device before returning: the transport's
// stream does not synchronise with the legacy default stream, and a copy
// from pageable memory may return before its DMA is done.
void Upload(void* d, const std::vector<uint8_t>& v) {
  ASSERT_EQ(cudaMemcpy(d, v.data(), v.size(), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

std::vector<uint8_t> Download(const void* d, size_t bytes) {
  std::vector<uint8_t> v(bytes);
  EXPECT_EQ(cudaMemcpy(v.data(), d, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

// Starts this binary again, running only the test NcclChild.<test>, with
// `env` ("NAME=value") added to the environment. Everything is built before
// fork(): the parent has NCCL and CUDA threads, so the child calls nothing
// but execve. gtest's and bazel's output files stay the parent's.
pid_t SpawnChild(const std::string& test, const std::vector<std::string>& env) {
  std::vector<std::string> strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view kv(*e);
    if (absl::StartsWith(kv, "XML_OUTPUT_FILE=") || absl::StartsWith(kv, "GTEST_OUTPUT=") ||
        absl::StartsWith(kv, "TEST_PREMATURE_EXIT_FILE=")) {
      continue;
    }
    strings.emplace_back(kv);
  }
  strings.insert(strings.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (std::string& s : strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string name = "nccl_transport_test";
  std::string filter = absl::StrCat("--gtest_filter=NcclChild.", test);
  std::vector<char*> argv = {name.data(), filter.data(), nullptr};
  const pid_t pid = fork();
  if (pid == 0) {
    execve("/proc/self/exe", argv.data(), envp.data());
    _exit(127);
  }
  return pid;
}

// The child's wait status, or -1 when it was still running after `timeout`
// (it is killed then).
int WaitChild(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  return -1;
}

void KillChild(pid_t pid) {
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
}

std::string Hex(const NcclId& id) {
  return absl::BytesToHexString(absl::string_view(id.data(), id.size()));
}

absl::StatusOr<std::unique_ptr<NcclTransport>> ConnectRank(
    int rank, int world, const NcclId& id, absl::Duration timeout = absl::Seconds(60)) {
  return NcclTransport::Connect({.rank = rank,
                                 .world_size = world,
                                 .unique_id = id,
                                 .device = 0,
                                 .deadline = absl::Now() + timeout});
}

// ---------------------------------------------------------------------------
// Scenarios: the same function runs on every rank of a multi-rank test (rank
// 0 in the test process, the others in children), gtest assertions inside.

// 3 ranks: BroadcastHost of odd sizes, growing and shrinking (so the staging
// buffer grows more than once and is reused), from every root.
void HostBroadcastScenario(int rank, int world, const NcclId& id) {
  auto t = ConnectRank(rank, world, id);
  ASSERT_TRUE(t.ok()) << t.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  for (size_t bytes : {size_t{1}, size_t{4099}, (size_t{3} << 20) + 5, size_t{17}}) {
    for (int root = 0; root < world; ++root) {
      const std::vector<uint8_t> want = Pattern(bytes, root * 31 + static_cast<int>(bytes));
      std::vector<uint8_t> buf = want;
      if (rank != root) {
        for (uint8_t& b : buf) b = static_cast<uint8_t>(~b);  // differs at every byte
      }
      const absl::Status s = (*t)->BroadcastHost(buf.data(), bytes, root, deadline);
      ASSERT_TRUE(s.ok()) << "rank " << rank << ", root " << root << ": " << s;
      ASSERT_EQ(buf, want) << "rank " << rank << ", root " << root << ", " << bytes << " bytes";
    }
  }
  // Still in step with the device-memory collectives.
  auto min = (*t)->AllReduceMin(10 + rank, deadline);
  ASSERT_TRUE(min.ok()) << min.status();
  EXPECT_EQ(*min, 10);
  EXPECT_TRUE((*t)->healthy());
}

using Scenario = void (*)(int rank, int world, const NcclId& id);

Scenario FindScenario(absl::string_view name) {
  if (name == "host_broadcast") return HostBroadcastScenario;
  return nullptr;
}

// Runs scenario `name` as rank 0 here and as ranks 1..world-1 in children.
// Every child must pass, except the `hung` ranks, killed once rank 0 is done
// (all are killed at once when rank 0 failed: they may be waiting on it).
void RunOnRanks(const std::string& name, int world, const std::vector<int>& hung = {}) {
  NcclEnv("host0");
  auto id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  std::vector<pid_t> pids(world, -1);
  for (int r = 1; r < world; ++r) {
    pids[r] = SpawnChild("Scenario", {absl::StrCat(kScenarioEnv, "=", name),
                                      absl::StrCat(kIdEnv, "=", Hex(*id)),
                                      absl::StrCat(kRankEnv, "=", r),
                                      absl::StrCat(kWorldEnv, "=", world)});
    ASSERT_GT(pids[r], 0) << "fork for rank " << r;
  }
  FindScenario(name)(0, world, *id);
  const bool failed = ::testing::Test::HasFailure();
  for (int r = 1; r < world; ++r) {
    if (failed || std::find(hung.begin(), hung.end(), r) != hung.end()) {
      KillChild(pids[r]);
      continue;
    }
    const int status = WaitChild(pids[r], absl::Seconds(120));
    EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "rank " << r << " (a child process) failed or hung, wait status " << status
        << "; its output is above";
  }
}

// A child rank of RunOnRanks.
TEST(NcclChild, Scenario) {
  const char* name = std::getenv(kScenarioEnv);
  if (name == nullptr) GTEST_SKIP() << "only run as a child rank of the multi-rank tests";
  int rank = 0;
  int world = 0;
  ASSERT_TRUE(absl::SimpleAtoi(std::getenv(kRankEnv), &rank));
  ASSERT_TRUE(absl::SimpleAtoi(std::getenv(kWorldEnv), &world));
  const std::string host = absl::StrCat("host", rank);
  NcclEnv(host.c_str());
  const std::string bytes = absl::HexStringToBytes(std::getenv(kIdEnv));
  ASSERT_EQ(bytes.size(), kNcclUniqueIdBytes);
  NcclId id;
  std::memcpy(id.data(), bytes.data(), kNcclUniqueIdBytes);
  const Scenario scenario = FindScenario(name);
  ASSERT_NE(scenario, nullptr) << name;
  scenario(rank, world, id);
}

// ---------------------------------------------------------------------------

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
  Upload(d, want);
  ASSERT_TRUE((*t)->Broadcast(d, kBytes, 0, absl::Now() + absl::Seconds(30)).ok());
  EXPECT_EQ(Download(d, kBytes), want);
  auto min = (*t)->AllReduceMin(5, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(min.ok()) << min.status();
  EXPECT_EQ(*min, 5);
  std::vector<uint8_t> host = Pattern(4099, 2);
  ASSERT_TRUE(
      (*t)->BroadcastHost(host.data(), host.size(), 0, absl::Now() + absl::Seconds(30)).ok());
  EXPECT_EQ(host, Pattern(4099, 2));
  EXPECT_EQ((*t)->Broadcast(d, kBytes, 1, absl::Now() + absl::Seconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->BroadcastHost(host.data(), host.size(), 1, absl::Now() + absl::Seconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*t)->healthy());
  (*t)->Abort();
  (*t)->Abort();  // idempotent
  EXPECT_FALSE((*t)->healthy());
  EXPECT_EQ((*t)->Broadcast(d, kBytes, 0, absl::Now() + absl::Seconds(1)).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ((*t)->BroadcastHost(host.data(), host.size(), 0, absl::Now() + absl::Seconds(1)).code(),
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

TEST(NcclTransportTest, HostBroadcastFromEveryRoot) {
  WC_SKIP_WITHOUT_GPU();
  RunOnRanks("host_broadcast", 3);
}

// Rank 1, run as a child process by NcclTwoRankTest.
TEST(NcclChild, Rank1) {
  const char* hex = std::getenv(kIdEnv);
  if (hex == nullptr || std::getenv(kScenarioEnv) != nullptr) {
    GTEST_SKIP() << "only run as the NCCL child of NcclTwoRankTest";
  }
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
  ASSERT_EQ(Download(d, kBytes), Pattern(7));
  Upload(d, Pattern(9));
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
  const pid_t pid = SpawnChild("Rank1", {absl::StrCat(kIdEnv, "=", Hex(*id))});
  ASSERT_GT(pid, 0);
  auto t = NcclTransport::Connect({.rank = 0, .world_size = 2, .unique_id = *id, .device = 0,
                                   .deadline = absl::Now() + absl::Seconds(60)});
  ASSERT_TRUE(t.ok()) << t.status();
  void* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, kBytes), cudaSuccess);
  Upload(d, Pattern(7));
  ASSERT_TRUE((*t)->Broadcast(d, kBytes, 0, absl::Now() + absl::Seconds(60)).ok());
  ASSERT_TRUE((*t)->Broadcast(d, kBytes, 1, absl::Now() + absl::Seconds(60)).ok());
  EXPECT_EQ(Download(d, kBytes), Pattern(9));
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
  KillChild(pid);
  cudaFree(d);
}

INSTANTIATE_TEST_SUITE_P(Modes, NcclTwoRankTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Abort" : "Timeout"; });

}  // namespace
}  // namespace weightcast
