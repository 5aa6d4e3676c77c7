// NcclTransport. Option checks run everywhere; the rest needs a real GPU and
// skips without one: one-rank broadcast and all-reduce; init timeout when a
// peer never joins; and with more ranks in child processes (this binary
// re-executed, each rank with its own NCCL_HOSTID so NCCL takes them for
// separate hosts and uses its socket transport over loopback, all on GPU 0):
//   - a two-way broadcast, the commit vote, then a broadcast the child never
//     joins ending in DEADLINE_EXCEEDED, or an Abort() from another thread
//     ending it in ABORTED;
//   - BroadcastHost of odd-sized host buffers from every root;
//   - partial broadcasts over the per-sender sub-communicators (2 senders,
//     2 inference ranks), each sender sending while the other does not call;
//   - a partial broadcast whose receiver never calls (DEADLINE_EXCEEDED);
//   - a split that a peer never makes (Connect's DEADLINE_EXCEEDED).
#include "transport/nccl_transport.h"

#include <cuda_runtime_api.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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
    int rank, int world, const NcclId& id, int num_senders,
    absl::Duration timeout = absl::Seconds(60)) {
  return NcclTransport::Connect({.rank = rank,
                                 .world_size = world,
                                 .unique_id = id,
                                 .device = 0,
                                 .deadline = absl::Now() + timeout,
                                 .num_senders = num_senders});
}

// ---------------------------------------------------------------------------
// Scenarios: the same function runs on every rank of a multi-rank test (rank
// 0 in the test process, the others in children), gtest assertions inside.

// 3 ranks: BroadcastHost of odd sizes, growing and shrinking (so the staging
// buffer grows more than once and is reused), from every root.
void HostBroadcastScenario(int rank, int world, const NcclId& id) {
  auto t = ConnectRank(rank, world, id, /*num_senders=*/0);
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

// 2 senders (0, 1) + 2 inference ranks (2, 3).
void PartialBroadcastScenario(int rank, int world, const NcclId& id) {
  constexpr int kSenders = 2;
  auto t = ConnectRank(rank, world, id, kSenders);
  ASSERT_TRUE(t.ok()) << t.status();
  NcclTransport& tr = **t;
  ASSERT_TRUE(tr.SupportsPartialBroadcast());
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  void* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, kBytes), cudaSuccess);

  if (rank == 0) {
    // Misuse is refused up front and breaks nothing.
    EXPECT_EQ(tr.BroadcastToRanks(d, kBytes, 1, kSenders, 0, deadline).code(),
              absl::StatusCode::kInvalidArgument);  // the other sender's broadcast
    EXPECT_EQ(tr.BroadcastToRanks(d, kBytes, 0, 1, 0, deadline).code(),
              absl::StatusCode::kInvalidArgument);  // receivers are the inference ranks
    EXPECT_EQ(tr.BroadcastToRanks(d, kBytes, 2, kSenders, 0, deadline).code(),
              absl::StatusCode::kInvalidArgument);  // root is not a sender
    EXPECT_TRUE(tr.healthy());
  }

  // Two rounds, the inference ranks taking the senders in opposite orders:
  // each sub-communicator keeps its own order, whatever the others do.
  for (int round = 0; round < 2; ++round) {
    const size_t bytes = round == 0 ? kBytes : 4099;
    if (rank < kSenders) {
      // This sender's bucket; the other sender does not call for it.
      Upload(d, Pattern(bytes, 100 * (round + 1) + rank));
      const absl::Status s = tr.BroadcastToRanks(d, bytes, rank, kSenders, /*tag=*/rank, deadline);
      ASSERT_TRUE(s.ok()) << "sender " << rank << ", round " << round << ": " << s;
    } else {
      for (int i = 0; i < kSenders; ++i) {
        const int root = round == 0 ? i : kSenders - 1 - i;
        ASSERT_EQ(cudaMemset(d, 0, bytes), cudaSuccess);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        const absl::Status s = tr.BroadcastToRanks(d, bytes, root, kSenders, root, deadline);
        ASSERT_TRUE(s.ok()) << "rank " << rank << ", root " << root << ", round " << round << ": "
                            << s;
        ASSERT_EQ(Download(d, bytes), Pattern(bytes, 100 * (round + 1) + root))
            << "rank " << rank << ", root " << root << ", round " << round;
      }
    }
  }

  // The senders sat out each other's broadcasts; the whole group is still in
  // step on the parent communicator.
  if (rank == 3) Upload(d, Pattern(7));
  ASSERT_TRUE(tr.Broadcast(d, kBytes, 3, deadline).ok());
  EXPECT_EQ(Download(d, kBytes), Pattern(7)) << "rank " << rank;
  auto min = tr.AllReduceMin(rank + 1, deadline);
  ASSERT_TRUE(min.ok()) << min.status();
  EXPECT_EQ(*min, 1);
  EXPECT_TRUE(tr.healthy());
  t->reset();  // graceful teardown of every communicator, on every rank
  cudaFree(d);
}

// 2 senders (0, 1) + 1 inference rank (2), which takes one partial broadcast
// and then never calls again; sender 1 stays idle.
void HungReceiverScenario(int rank, int world, const NcclId& id) {
  constexpr int kSenders = 2;
  // Far more than NCCL's and the sockets' buffers hold, so the root cannot
  // finish without the receiver.
  constexpr size_t kHangBytes = size_t{256} << 20;
  auto t = ConnectRank(rank, world, id, kSenders);
  ASSERT_TRUE(t.ok()) << t.status();
  NcclTransport& tr = **t;
  void* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, kHangBytes), cudaSuccess);
  if (rank == 0 || rank == 2) {
    // One that works first, so the timeout below is the receiver's doing.
    if (rank == 0) Upload(d, Pattern(3));
    const absl::Status s = tr.BroadcastToRanks(d, kBytes, 0, kSenders, 0,
                                               absl::Now() + absl::Seconds(60));
    ASSERT_TRUE(s.ok()) << "rank " << rank << ": " << s;
    ASSERT_EQ(Download(d, kBytes), Pattern(3));
  }
  if (rank != 0) {
    absl::SleepFor(absl::Seconds(120));  // a hung peer; rank 0 kills us
    return;
  }
  const absl::Duration timeout = absl::Seconds(2);
  const absl::Time start = absl::Now();
  const absl::Status s = tr.BroadcastToRanks(d, kHangBytes, 0, kSenders, 1, start + timeout);
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "rank 0")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "root 0")) << s;
  EXPECT_GE(took, timeout);
  EXPECT_LT(took, timeout + absl::Seconds(8));  // the deadline, then the aborts
  EXPECT_FALSE(tr.healthy());
  EXPECT_EQ(tr.BroadcastToRanks(d, kBytes, 0, kSenders, 2, absl::Now() + absl::Seconds(1)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(tr.Broadcast(d, kBytes, 0, absl::Now() + absl::Seconds(1)).code(),
            absl::StatusCode::kFailedPrecondition);
  const absl::Time before_reset = absl::Now();
  t->reset();  // every communicator already aborted: no hang
  EXPECT_LT(absl::Now() - before_reset, absl::Seconds(5));
  cudaFree(d);
}

// 2 ranks; rank 1 connects without num_senders, so it never makes the split
// that rank 0 (num_senders = 1) waits for.
void NeverSplitsScenario(int rank, int world, const NcclId& id) {
  if (rank == 1) {
    auto t = ConnectRank(rank, world, id, /*num_senders=*/0);
    ASSERT_TRUE(t.ok()) << t.status();
    absl::SleepFor(absl::Seconds(120));  // rank 0 kills us
    return;
  }
  const absl::Time start = absl::Now();
  auto t = ConnectRank(rank, world, id, /*num_senders=*/1, absl::Seconds(15));
  EXPECT_EQ(t.status().code(), absl::StatusCode::kDeadlineExceeded) << t.status();
  EXPECT_TRUE(absl::StrContains(t.status().message(), "root 0")) << t.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(25));
}

using Scenario = void (*)(int rank, int world, const NcclId& id);

Scenario FindScenario(absl::string_view name) {
  if (name == "host_broadcast") return HostBroadcastScenario;
  if (name == "partial_broadcast") return PartialBroadcastScenario;
  if (name == "hung_receiver") return HungReceiverScenario;
  if (name == "never_splits") return NeverSplitsScenario;
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

// No WC_SKIP_WITHOUT_GPU(): the options are checked before any CUDA call, so
// this holds on machines without a GPU or driver too (there a CUDA call
// would fail with INTERNAL instead).
TEST(NcclTransportTest, RejectsBadSenderCountBeforeTouchingCuda) {
  for (int num_senders : {-1, 3, 100}) {
    const absl::Status s =
        NcclTransport::Connect({.rank = 0, .world_size = 2, .num_senders = num_senders}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << num_senders << ": " << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "senders")) << s;
  }
  EXPECT_EQ(NcclTransport::Connect({.rank = 2, .world_size = 2}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NcclTransport::Connect({.rank = 0, .world_size = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NcclTransportTest, OneRankBroadcastAndAllReduce) {
  WC_SKIP_WITHOUT_GPU();
  NcclEnv("host0");
  auto id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  // One sender and no inference rank: nothing to split.
  auto t = NcclTransport::Connect({.rank = 0, .world_size = 1, .unique_id = *id, .device = 0,
                                   .deadline = absl::Now() + absl::Seconds(60),
                                   .num_senders = 1});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE((*t)->IsDeviceMemory());
  EXPECT_FALSE((*t)->SupportsPartialBroadcast());
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
  EXPECT_EQ((*t)->BroadcastToRanks(d, kBytes, 0, 1, 0, absl::Now() + absl::Seconds(1)).code(),
            absl::StatusCode::kFailedPrecondition);
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

// An abort (the group's, a planned stop) while the communicator forms ends
// Connect within a poll interval, not at its deadline.
TEST(NcclTransportTest, ConnectEndsAtOnceWhenCancelled) {
  WC_SKIP_WITHOUT_GPU();
  NcclEnv("host0");
  auto id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  std::atomic<bool> cancel{false};
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(500));
    cancel = true;
  });
  const absl::Time start = absl::Now();
  auto t = NcclTransport::Connect({.rank = 0, .world_size = 2, .unique_id = *id, .device = 0,
                                   .deadline = absl::Now() + absl::Seconds(60),
                                   .cancel = &cancel});
  const absl::Duration took = absl::Now() - start;
  canceller.join();
  EXPECT_EQ(t.status().code(), absl::StatusCode::kCancelled) << t.status();
  EXPECT_LT(took, absl::Seconds(5));
}

TEST(NcclTransportTest, RejectsBadDevice) {
  WC_SKIP_WITHOUT_GPU();
  EXPECT_EQ(NcclTransport::Connect({.rank = 0, .world_size = 1, .device = 4096}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NcclTransportTest, HostBroadcastFromEveryRoot) {
  WC_SKIP_WITHOUT_GPU();
  RunOnRanks("host_broadcast", 3);
}

TEST(NcclTransportTest, PartialBroadcastPerSender) {
  WC_SKIP_WITHOUT_GPU();
  RunOnRanks("partial_broadcast", 4);
}

TEST(NcclTransportTest, PartialBroadcastTimesOutWhenTheReceiverNeverCalls) {
  WC_SKIP_WITHOUT_GPU();
  RunOnRanks("hung_receiver", 3, /*hung=*/{1, 2});
}

TEST(NcclTransportTest, ConnectTimesOutWhenAPeerNeverSplits) {
  WC_SKIP_WITHOUT_GPU();
  RunOnRanks("never_splits", 2, /*hung=*/{1});
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
  // Now play a hung peer: never join the next collective (an all-reduce).
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
  // An all-reduce: it cannot finish without the peer's contribution. (A
  // broadcast from this root can: over sockets a few MiB fit into NCCL's
  // and the kernel's buffers, and it returns OK with the peer hung.)
  const absl::StatusOr<int64_t> s = (*t)->AllReduceMin(
      5, absl::Now() + (abort_instead_of_timeout ? absl::Seconds(30) : absl::Seconds(2)));
  if (aborter.joinable()) aborter.join();
  EXPECT_EQ(s.status().code(), abort_instead_of_timeout ? absl::StatusCode::kAborted
                                                        : absl::StatusCode::kDeadlineExceeded)
      << s.status();
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
