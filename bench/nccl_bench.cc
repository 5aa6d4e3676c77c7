// NcclTransport::Broadcast (non-blocking communicator, polled against a
// deadline) against a raw blocking ncclBroadcast + cudaStreamSynchronize of
// the same bytes, two ranks on one GPU (this binary re-executes itself as
// rank 1, its own NCCL_HOSTID, sockets over loopback). Both in one run; the
// ratio is the transport's overhead. See bench/README.md.
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "kernels/gpu_device.h"
#include "transport/nccl_transport.h"

namespace weightcast {
namespace {

constexpr int kReps = 8;
const size_t kSizes[] = {size_t{16} << 20, size_t{256} << 20};

#define CHECK(cond, ...)                                    \
  do {                                                      \
    if (!(cond)) {                                          \
      std::fprintf(stderr, "check failed: %s\n", #cond);   \
      std::exit(1);                                         \
    }                                                       \
  } while (0)

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double NowS() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int RunRank(int rank, const std::string& raw_hex, const std::string& t_hex) {
  setenv("NCCL_HOSTID", rank == 0 ? "host0" : "host1", 1);
  setenv("NCCL_SOCKET_IFNAME", "lo", 0);
  setenv("NCCL_IB_DISABLE", "1", 0);
  CHECK(cudaSetDevice(0) == cudaSuccess);
  ncclUniqueId raw_id;
  const std::string raw_bytes = absl::HexStringToBytes(raw_hex);
  std::memcpy(raw_id.internal, raw_bytes.data(), sizeof(raw_id));
  ncclComm_t raw;
  CHECK(ncclCommInitRank(&raw, 2, raw_id, rank) == ncclSuccess);
  NcclOptions o{.rank = rank, .world_size = 2, .device = 0,
                .deadline = absl::Now() + absl::Seconds(120)};
  const std::string t_bytes = absl::HexStringToBytes(t_hex);
  std::memcpy(o.unique_id.data(), t_bytes.data(), kNcclUniqueIdBytes);
  auto t = NcclTransport::Connect(o);
  if (!t.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, t.status().ToString().c_str());
    return 1;
  }
  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream) == cudaSuccess);
  void* buf = nullptr;
  CHECK(cudaMalloc(&buf, kSizes[1]) == cudaSuccess);
  CHECK(cudaMemset(buf, rank + 1, kSizes[1]) == cudaSuccess);
  if (rank == 0) std::printf("%-12s %12s %12s %12s %10s\n", "bytes", "raw GB/s", "wc GB/s", "wc ms", "wc/raw");
  for (size_t bytes : kSizes) {
    std::vector<double> raw_s, t_s;
    for (int i = 0; i < kReps + 1; ++i) {
      double a = NowS();
      CHECK(ncclBroadcast(buf, buf, bytes, ncclUint8, 0, raw, stream) == ncclSuccess);
      CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
      if (i > 0) raw_s.push_back(NowS() - a);
      a = NowS();
      const absl::Status s = (*t)->Broadcast(buf, bytes, 0, absl::Now() + absl::Seconds(60));
      if (!s.ok()) {
        std::fprintf(stderr, "rank %d: %s\n", rank, s.ToString().c_str());
        return 1;
      }
      if (i > 0) t_s.push_back(NowS() - a);
    }
    if (rank == 0) {
      const double r = Median(raw_s), w = Median(t_s);
      std::printf("%-12zu %12.2f %12.2f %12.3f %10.3f\n", bytes, bytes / r / 1e9, bytes / w / 1e9,
                  w * 1e3, w / r);
    }
  }
  if (rank == 0) std::printf("goal (issue 5): end-to-end update <= 1.10 x raw ncclBroadcast\n");
  t->reset();
  ncclCommDestroy(raw);
  return 0;
}

int Main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--rank1") return RunRank(1, argv[2], argv[3]);
  auto gpus = CudaDeviceCount();
  if (!gpus.ok() || *gpus == 0) return ReportNoGpu("nccl_bench", gpus, "nothing measured");
  setenv("NCCL_HOSTID", "host0", 1);
  setenv("NCCL_SOCKET_IFNAME", "lo", 0);
  setenv("NCCL_IB_DISABLE", "1", 0);
  ncclUniqueId raw_id;
  CHECK(ncclGetUniqueId(&raw_id) == ncclSuccess);
  auto t_id = NewNcclUniqueId();
  CHECK(t_id.ok());
  const std::string raw_hex =
      absl::BytesToHexString(absl::string_view(raw_id.internal, sizeof(raw_id)));
  const std::string t_hex = absl::BytesToHexString(absl::string_view(t_id->data(), t_id->size()));
  const pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    execl("/proc/self/exe", argv[0], "--rank1", raw_hex.c_str(), t_hex.c_str(), nullptr);
    _exit(127);
  }
  const int rc = RunRank(0, raw_hex, t_hex);
  int status = 0;
  if (rc != 0) kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return rc != 0 ? rc : (WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) { return weightcast::Main(argc, argv); }
