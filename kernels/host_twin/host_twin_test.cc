// The host twin refuses what a GPU would refuse or fault on, so host-logic
// bugs in the device paths fail on the CPU: host memory where device memory
// belongs, a copy past an allocation, a dead stream, a kernel reading host
// memory; and its launchers compute what the CPU twins do.
#include <cuda_runtime_api.h>

#include <cstring>
#include <vector>

#include "common/checksum.h"
#include "gtest/gtest.h"
#include "kernels/checksum_cuda.h"
#include "kernels/host_twin/memory.h"
#include "kernels/pack_cuda.h"

namespace weightcast {
namespace {

TEST(HostTwinRuntime, CopiesGoTheWayTheirKindSaysAndStayInsideAllocations) {
  void* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 64), cudaSuccess);
  std::vector<char> h(64, 'x');
  EXPECT_TRUE(host_twin::IsDevice(d, 64));
  EXPECT_FALSE(host_twin::IsDevice(d, 65));
  EXPECT_FALSE(host_twin::IsDevice(h.data(), 1));
  EXPECT_EQ(cudaMemcpy(d, h.data(), 64, cudaMemcpyHostToDevice), cudaSuccess);
  // Reversed kinds, host for device, past the end: refused, nothing copied.
  EXPECT_EQ(cudaMemcpy(d, h.data(), 64, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(h.data(), h.data() + 1, 8, cudaMemcpyDeviceToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(static_cast<char*>(d) + 32, h.data(), 33, cudaMemcpyHostToDevice),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(h.data(), 0, 8), cudaErrorInvalidValue);
  std::vector<char> back(64);
  EXPECT_EQ(cudaMemcpy(back.data(), d, 64, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, h);
  EXPECT_EQ(cudaFree(static_cast<char*>(d) + 1), cudaErrorInvalidValue);  // not a base
  EXPECT_EQ(cudaFree(d), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(back.data(), d, 8, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  // Memory from cudaMalloc is not zeroed (code must not rely on it).
  ASSERT_EQ(cudaMalloc(&d, 16), cudaSuccess);
  std::vector<unsigned char> fresh(16);
  ASSERT_EQ(cudaMemcpy(fresh.data(), d, 16, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(fresh, std::vector<unsigned char>(16, 0xCD));
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST(HostTwinRuntime, StreamsMustBeLive) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorInvalidValue);
  EXPECT_EQ(cudaStreamDestroy(s), cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
}

TEST(HostTwinLaunchers, KernelsTouchOnlyDeviceMemoryAndComputeTheCpuTwins) {
  constexpr size_t n = 10000;
  void *src = nullptr, *dst = nullptr, *scratch = nullptr, *digests = nullptr;
  ASSERT_EQ(cudaMalloc(&src, n), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dst, n), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&scratch, CopyTableScratchBytes(1)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&digests, NumChecksumChunks(n) * 8), cudaSuccess);
  std::vector<std::byte> h(n);
  for (size_t i = 0; i < n; ++i) h[i] = static_cast<std::byte>(i * 13);
  ASSERT_EQ(cudaMemcpy(src, h.data(), n, cudaMemcpyHostToDevice), cudaSuccess);
  CopyEntry e{.src = reinterpret_cast<uint64_t>(src), .dst = reinterpret_cast<uint64_t>(dst),
              .src_row_stride = 100, .dst_row_stride = 100, .rows = 100, .cols = 100,
              .elem_size = 1};
  ASSERT_EQ(LaunchCopyTable(&e, 1, scratch, nullptr), cudaSuccess);
  std::vector<std::byte> back(n);
  ASSERT_EQ(cudaMemcpy(back.data(), dst, n, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, h);
  // A table reading host memory, or past the source: refused, not run.
  CopyEntry from_host = e;
  from_host.src = reinterpret_cast<uint64_t>(h.data());
  EXPECT_EQ(LaunchCopyTable(&from_host, 1, scratch, nullptr), cudaErrorInvalidValue);
  CopyEntry past = e;
  past.rows = 101;
  EXPECT_EQ(LaunchCopyTable(&past, 1, scratch, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(LaunchCopyTable(&e, 1, h.data(), nullptr), cudaErrorInvalidValue);  // host scratch
  // Chunk digests: the CPU checksum's.
  ASSERT_EQ(LaunchChunkDigests(src, n, static_cast<uint64_t*>(digests), nullptr), cudaSuccess);
  std::vector<uint64_t> got(NumChecksumChunks(n));
  ASSERT_EQ(cudaMemcpy(got.data(), digests, got.size() * 8, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(CombineDigests(got.data(), got.size(), n), BucketChecksum(h.data(), n));
  EXPECT_EQ(LaunchChunkDigests(h.data(), n, static_cast<uint64_t*>(digests), nullptr),
            cudaErrorInvalidValue);
  (void)cudaGetLastError();
  for (void* p : {src, dst, scratch, digests}) EXPECT_EQ(cudaFree(p), cudaSuccess);
}

}  // namespace
}  // namespace weightcast
