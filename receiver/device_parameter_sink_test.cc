// DeviceParameterSink: target checks (anywhere), and on a GPU the staged
// mode's all-or-nothing and the in-place mode's dirty flag, bytes compared.
#include "receiver/device_parameter_sink.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/gpu_device.h"

namespace weightcast {
namespace {

GlobalManifest TwoTensors() {
  GlobalManifest m;
  m.weight_version = 3;
  m.tensors.push_back(ManifestTensor{.spec = {"a", DType::kBF16, {4, 8}}});
  m.tensors.push_back(ManifestTensor{.spec = {"b", DType::kF32, {10}}});
  return m;
}

TEST(DeviceParameterSinkTest, EveryTensorNeedsATargetOfItsSize) {
  GlobalManifest m = TwoTensors();
  int fake = 0;
  DeviceParameterSink missing(0, {{"a", {&fake, 64}}}, DeviceParameterSink::Mode::kStaged);
  absl::Status s = missing.Begin(m);
  ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("'b' has no target"), std::string::npos) << s;
  DeviceParameterSink wrong(0, {{"a", {&fake, 64}}, {"b", {&fake, 39}}},
                            DeviceParameterSink::Mode::kInPlace);
  s = wrong.Begin(m);
  ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("'b': 40 bytes arrive, its target has 39"), std::string::npos) << s;
  DeviceParameterSink extra(0, {{"a", {&fake, 64}}, {"b", {&fake, 40}}, {"c", {&fake, 1}}},
                            DeviceParameterSink::Mode::kInPlace);
  EXPECT_EQ(extra.Begin(m).code(), absl::StatusCode::kFailedPrecondition);
  // After a failed Begin nothing is written or committed.
  std::byte byte{};
  EXPECT_EQ(missing.Write(0, 0, &byte, 1).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(missing.Commit().status().code(), absl::StatusCode::kInternal);
}

struct Gpu {
  std::vector<void*> ptrs;
  void* Alloc(const std::vector<uint8_t>& init) {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, init.size()), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, init.data(), init.size(), cudaMemcpyHostToDevice), cudaSuccess);
    ptrs.push_back(p);
    return p;
  }
  static std::vector<uint8_t> Read(const void* p, size_t n) {
    std::vector<uint8_t> v(n);
    EXPECT_EQ(cudaMemcpy(v.data(), p, n, cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
  ~Gpu() {
    for (void* p : ptrs) cudaFree(p);
  }
};

// `from_host`: the bucket arrived in host memory (gloo) rather than in a
// device landing slot (NCCL).
void RunVersion(DeviceParameterSink::Mode mode, bool commit, bool from_host = false) {
  WC_SKIP_WITHOUT_GPU();
  Gpu gpu;
  const std::vector<uint8_t> old_a(64, 0x11), old_b(40, 0x22);
  std::vector<uint8_t> new_bytes(104);
  std::iota(new_bytes.begin(), new_bytes.end(), 1);
  void* a = gpu.Alloc(old_a);
  void* b = gpu.Alloc(old_b);
  // The "landing slot": a received bucket holding a, then b.
  std::vector<uint8_t> host_slot = new_bytes;
  auto* slot = from_host ? reinterpret_cast<std::byte*>(host_slot.data())
                         : static_cast<std::byte*>(gpu.Alloc(new_bytes));
  GlobalManifest m = TwoTensors();
  DeviceParameterSink sink(0, {{"a", {a, 64}}, {"b", {b, 40}}}, mode);
  sink.SetWriteDevice(from_host ? -1 : 0);
  ASSERT_TRUE(sink.Begin(m).ok());
  ASSERT_TRUE(sink.Write(0, 0, slot, 30).ok());  // a in two segments
  ASSERT_TRUE(sink.Write(0, 30, slot + 30, 34).ok());
  ASSERT_TRUE(sink.Write(1, 0, slot + 64, 40).ok());
  ASSERT_TRUE(sink.EndBucket().ok());
  // The bucket's buffer is reused once EndBucket returned.
  std::fill(host_slot.begin(), host_slot.end(), 0xEE);
  if (commit) {
    ASSERT_TRUE(sink.Commit().ok());
    EXPECT_EQ(Gpu::Read(a, 64), std::vector<uint8_t>(new_bytes.begin(), new_bytes.begin() + 64));
    EXPECT_EQ(Gpu::Read(b, 40), std::vector<uint8_t>(new_bytes.begin() + 64, new_bytes.end()));
    return;
  }
  sink.Abort();
  if (mode == DeviceParameterSink::Mode::kStaged) {
    EXPECT_EQ(Gpu::Read(a, 64), old_a);  // nothing of an aborted version
    EXPECT_EQ(Gpu::Read(b, 40), old_b);
    EXPECT_FALSE(sink.dirty());
  } else {
    EXPECT_TRUE(sink.dirty());
  }
}

TEST(DeviceParameterSinkGpuTest, StagedCommitCopiesEveryByte) {
  RunVersion(DeviceParameterSink::Mode::kStaged, true);
}
TEST(DeviceParameterSinkGpuTest, StagedAbortLeavesParametersUntouched) {
  RunVersion(DeviceParameterSink::Mode::kStaged, false);
}
TEST(DeviceParameterSinkGpuTest, InPlaceCommitCopiesEveryByte) {
  RunVersion(DeviceParameterSink::Mode::kInPlace, true);
}
TEST(DeviceParameterSinkGpuTest, InPlaceAbortReportsDirtyParameters) {
  RunVersion(DeviceParameterSink::Mode::kInPlace, false);
}
TEST(DeviceParameterSinkGpuTest, BucketsInHostMemoryGoStraightToTheParameters) {
  RunVersion(DeviceParameterSink::Mode::kStaged, true, /*from_host=*/true);
  RunVersion(DeviceParameterSink::Mode::kInPlace, true, /*from_host=*/true);
}

TEST(DeviceParameterSinkGpuTest, AVersionMissingBytesIsNotCommitted) {
  WC_SKIP_WITHOUT_GPU();
  Gpu gpu;
  void* a = gpu.Alloc(std::vector<uint8_t>(64, 1));
  void* b = gpu.Alloc(std::vector<uint8_t>(40, 2));
  auto* slot = static_cast<std::byte*>(gpu.Alloc(std::vector<uint8_t>(64, 3)));
  GlobalManifest m = TwoTensors();
  DeviceParameterSink sink(0, {{"a", {a, 64}}, {"b", {b, 40}}},
                           DeviceParameterSink::Mode::kStaged);
  sink.SetWriteDevice(0);
  ASSERT_TRUE(sink.Begin(m).ok());
  ASSERT_TRUE(sink.Write(0, 0, slot, 64).ok());
  ASSERT_TRUE(sink.EndBucket().ok());
  absl::StatusOr<std::string> c = sink.Commit();
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("'b': 0 of 40"), std::string::npos) << c.status();
  EXPECT_EQ(Gpu::Read(a, 64), std::vector<uint8_t>(64, 1));
}

}  // namespace
}  // namespace weightcast
