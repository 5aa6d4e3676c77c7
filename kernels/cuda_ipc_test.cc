// The cache's bookkeeping with a fake mapper (runs anywhere), and a real
// two-process CUDA IPC round trip (skipped without a GPU): this binary
// re-executes itself as the child that opens the parent's handle.
#include "kernels/cuda_ipc.h"

#include <cuda_runtime_api.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "kernels/gpu_device.h"

namespace weightcast {
namespace {

class FakeMapper final : public IpcMapper {
 public:
  explicit FakeMapper(std::vector<std::string>* log) : log_(log) {}
  absl::StatusOr<void*> Open(absl::string_view handle) override {
    if (handle[0] == 'X') return absl::InternalError("cudaIpcOpenMemHandle failed");
    log_->push_back(absl::StrCat("open ", handle.substr(0, 1)));
    return reinterpret_cast<void*>(0x100000 * (handle[0] - 'A' + 1));
  }
  void Close(void* base) override {
    log_->push_back(absl::StrCat("close ", reinterpret_cast<uintptr_t>(base) / 0x100000));
  }

 private:
  std::vector<std::string>* log_;
};

std::string H(char c) { return std::string(kCudaIpcHandleBytes, c); }

TEST(IpcAllocationCacheTest, OpensOncePerHandleAndCachesAcrossUpdates) {
  std::vector<std::string> log;
  IpcAllocationCache cache(std::make_unique<FakeMapper>(&log));
  for (int update = 0; update < 3; ++update) {
    auto a = cache.Resolve("w1", H('A'), 1000, 0, 400);
    auto b = cache.Resolve("w2", H('A'), 1000, 400, 600);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(*a), 0x100000u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(*b), 0x100000u + 400);
  }
  EXPECT_EQ(log, std::vector<std::string>{"open A"});
  EXPECT_EQ(cache.open_allocations(), 1u);
}

TEST(IpcAllocationCacheTest, ReRegistrationClosesTheOldAllocationWhenUnused) {
  std::vector<std::string> log;
  {
    IpcAllocationCache cache(std::make_unique<FakeMapper>(&log));
    ASSERT_TRUE(cache.Resolve("w1", H('A'), 100, 0, 50).ok());
    ASSERT_TRUE(cache.Resolve("w2", H('A'), 100, 50, 50).ok());
    ASSERT_TRUE(cache.Resolve("w1", H('B'), 100, 0, 50).ok());  // w2 still uses A
    EXPECT_EQ(cache.open_allocations(), 2u);
    ASSERT_TRUE(cache.Resolve("w2", H('B'), 100, 50, 50).ok());  // A unused now
    EXPECT_EQ(cache.open_allocations(), 1u);
    cache.Release("w1");
    cache.Release("w2");
    EXPECT_EQ(cache.open_allocations(), 0u);
    ASSERT_TRUE(cache.Resolve("w3", H('C'), 100, 0, 1).ok());
  }
  EXPECT_EQ(log, (std::vector<std::string>{"open A", "open B", "close 1", "close 2", "open C",
                                           "close 3"}));
}

TEST(IpcAllocationCacheTest, RetainOnlyClosesAllocationsOfDroppedTensors) {
  std::vector<std::string> log;
  IpcAllocationCache cache(std::make_unique<FakeMapper>(&log));
  ASSERT_TRUE(cache.Resolve("w1", H('A'), 100, 0, 50).ok());
  ASSERT_TRUE(cache.Resolve("w2", H('B'), 100, 0, 50).ok());
  ASSERT_TRUE(cache.Resolve("w3", H('B'), 100, 50, 50).ok());
  cache.RetainOnly({"w2"});
  EXPECT_EQ(cache.open_allocations(), 1u);
  EXPECT_EQ(log, (std::vector<std::string>{"open A", "open B", "close 1"}));
  cache.RetainOnly({});
  EXPECT_EQ(cache.open_allocations(), 0u);
}

TEST(IpcAllocationCacheTest, ValidatesHandleAndRange) {
  std::vector<std::string> log;
  IpcAllocationCache cache(std::make_unique<FakeMapper>(&log));
  EXPECT_EQ(cache.Resolve("w", std::string(66, 'A'), 100, 0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.Resolve("w", H('A'), 100, 60, 41).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.Resolve("w", H('A'), 100, 101, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(cache.Resolve("w", H('A'), 100, 0, 100).ok());
  EXPECT_EQ(cache.Resolve("v", H('A'), 200, 0, 100).status().code(),
            absl::StatusCode::kInvalidArgument);
  const absl::Status s = cache.Resolve("bad", H('X'), 100, 0, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("bad"), absl::string_view::npos);
  EXPECT_TRUE(log == std::vector<std::string>{"open A"});
}

// Child half: runs only when the parent re-executes this binary.
TEST(IpcChild, ReadsParentAllocation) {
  const char* hex = std::getenv("WC_IPC_CHILD_HANDLE");
  if (hex == nullptr) GTEST_SKIP() << "only run as the IPC child";
  const std::string handle = absl::HexStringToBytes(hex);
  IpcAllocationCache cache(0);
  constexpr uint64_t kBytes = 1 << 20, kOffset = 4096 + 16;
  auto p = cache.Resolve("t", handle, kBytes, kOffset, 256);
  ASSERT_TRUE(p.ok()) << p.status();
  std::vector<uint8_t> got(256);
  ASSERT_EQ(cudaMemcpy(got.data(), *p, 256, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int i = 0; i < 256; ++i) ASSERT_EQ(got[i], static_cast<uint8_t>((kOffset + i) * 7)) << i;
  // Write back through the mapping: the parent must see it.
  ASSERT_EQ(cudaMemset(*p, 0xEE, 16), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(CudaIpcGpuTest, ChildProcessReadsAndWritesThroughTheCache) {
  WC_SKIP_WITHOUT_GPU();
  constexpr uint64_t kBytes = 1 << 20, kOffset = 4096 + 16;
  void* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, kBytes), cudaSuccess);
  std::vector<uint8_t> host(kBytes);
  for (uint64_t i = 0; i < kBytes; ++i) host[i] = static_cast<uint8_t>(i * 7);
  ASSERT_EQ(cudaMemcpy(d, host.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
  cudaIpcMemHandle_t h;
  ASSERT_EQ(cudaIpcGetMemHandle(&h, d), cudaSuccess);
  const std::string hex =
      absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(&h), sizeof(h)));
  // The child's environment is built before fork: after it (in a process
  // with the CUDA runtime's threads) only async-signal-safe calls are safe.
  std::string handle_var = "WC_IPC_CHILD_HANDLE=" + hex;
  std::vector<char*> envp = {handle_var.data()};
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  envp.push_back(nullptr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execle("/proc/self/exe", "cuda_ipc_test", "--gtest_filter=IpcChild.*", nullptr, envp.data());
    _exit(127);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  uint8_t back[16];
  ASSERT_EQ(cudaMemcpy(back, static_cast<char*>(d) + kOffset, 16, cudaMemcpyDeviceToHost),
            cudaSuccess);
  for (uint8_t b : back) EXPECT_EQ(b, 0xEE);
  cudaFree(d);
}

}  // namespace
}  // namespace weightcast
