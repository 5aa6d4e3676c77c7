// CallbackSink: whole and split tensors reach the callback with exactly the
// bytes that arrived, zero-byte tensors too, out-of-order segments and
// missing tensors are errors naming the tensor; on a GPU, device tensors are
// handed over (and split ones assembled) in device memory.
#include "receiver/callback_sink.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/gpu_device.h"
#ifdef WEIGHTCAST_HOST_TWIN
#include "kernels/host_twin/memory.h"
#endif

namespace weightcast {
namespace {

GlobalManifest ThreeTensors() {
  GlobalManifest m;
  m.weight_version = 7;
  m.tensors.push_back(ManifestTensor{.spec = {"whole", DType::kBF16, {4, 8}}});   // 64 B
  m.tensors.push_back(ManifestTensor{.spec = {"split", DType::kF32, {10}}});      // 40 B
  m.tensors.push_back(ManifestTensor{.spec = {"empty", DType::kF32, {0, 3}}});    // 0 B
  // Bucket 0: 'whole', then 16 bytes of 'split'; bucket 1: its other 24.
  m.bucket_segments = {
      {{0, Segment{.tensor = 0, .bucket = 0, .bucket_offset = 0, .tensor_offset = 0, .bytes = 64}},
       {1, Segment{.tensor = 1, .bucket = 0, .bucket_offset = 64, .tensor_offset = 0, .bytes = 16}}},
      {{1, Segment{.tensor = 1, .bucket = 1, .bucket_offset = 0, .tensor_offset = 16, .bytes = 24}}}};
  return m;
}

// Device allocations so far where they can be counted (the host twin's
// cudaMalloc count; 0 on a real GPU, where nothing counts them).
uint64_t DeviceAllocations() {
#ifdef WEIGHTCAST_HOST_TWIN
  return host_twin::AllocationCount();
#else
  return 0;
#endif
}

struct Got {
  std::string name;
  std::vector<uint8_t> bytes;
  int device = -2;
};

// Records every callback; device tensors are copied to the host first.
TensorCallbacks Recording(std::vector<Got>& got, std::vector<std::string>& events) {
  TensorCallbacks cb;
  cb.begin = [&events](uint64_t v, const GlobalManifest&) {
    events.push_back("begin " + std::to_string(v));
    return absl::OkStatus();
  };
  cb.tensor = [&got](const ReceivedTensor& t) {
    Got g{t.spec->name, std::vector<uint8_t>(t.bytes), t.device};
    if (t.bytes > 0 && t.device >= 0) {
      if (cudaMemcpy(g.bytes.data(), t.data, t.bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
        return absl::InternalError("copy back");
      }
    } else if (t.bytes > 0) {
      std::memcpy(g.bytes.data(), t.data, t.bytes);
    }
    got.push_back(std::move(g));
    return absl::OkStatus();
  };
  cb.commit = [&events](uint64_t v) -> absl::StatusOr<std::string> {
    events.push_back("commit " + std::to_string(v));
    return std::string("ok");
  };
  cb.abort = [&events](uint64_t v) { events.push_back("abort " + std::to_string(v)); };
  return cb;
}

std::vector<uint8_t> Iota(size_t n, uint8_t from) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), from);
  return v;
}

const std::byte* B(const std::vector<uint8_t>& v, size_t at = 0) {
  return reinterpret_cast<const std::byte*>(v.data() + at);
}

// A host CallbackSink recording what reaches its callbacks, and the
// three-tensor manifest it takes.
struct Recorded {
  std::vector<Got> got;
  std::vector<std::string> events;
  CallbackSink sink{Recording(got, events)};
  const GlobalManifest m = ThreeTensors();
};

TEST(CallbackSinkTest, WholeSplitAndEmptyTensorsArriveWithTheirBytes) {
  Recorded r;
  auto& [got, events, sink, m] = r;
  EXPECT_FALSE(sink.TakesDeviceMemory());
  const std::vector<uint8_t> bucket0 = Iota(64 + 16, 1), bucket1 = Iota(24, 200);
  sink.SetWriteDevice(-1);
  ASSERT_TRUE(sink.Begin(m).ok());
  ASSERT_TRUE(sink.Write(0, 0, B(bucket0), 64).ok());
  ASSERT_TRUE(sink.Write(1, 0, B(bucket0, 64), 16).ok());
  ASSERT_TRUE(sink.EndBucket().ok());
  ASSERT_EQ(got.size(), 1u);  // the split tensor waits for its last segment
  ASSERT_TRUE(sink.Write(1, 16, B(bucket1), 24).ok());
  ASSERT_TRUE(sink.EndBucket().ok());
  ASSERT_TRUE(sink.Commit().ok());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].name, "whole");
  EXPECT_EQ(got[0].bytes, std::vector<uint8_t>(bucket0.begin(), bucket0.begin() + 64));
  EXPECT_EQ(got[0].device, -1);
  EXPECT_EQ(got[1].name, "split");
  std::vector<uint8_t> want(bucket0.begin() + 64, bucket0.end());
  want.insert(want.end(), bucket1.begin(), bucket1.end());
  EXPECT_EQ(got[1].bytes, want);
  EXPECT_EQ(got[2].name, "empty");
  EXPECT_TRUE(got[2].bytes.empty());
  EXPECT_EQ(events, (std::vector<std::string>{"begin 7", "commit 7"}));
}

TEST(CallbackSinkTest, OutOfOrderSegmentsAndMissingTensorsAreErrorsNamingTheTensor) {
  Recorded r;
  auto& [got, events, sink, m] = r;
  const std::vector<uint8_t> bytes = Iota(64, 0);
  ASSERT_TRUE(sink.Begin(m).ok());
  absl::Status s = sink.Write(1, 8, B(bytes), 8);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("'split': segment out of order"), std::string::npos) << s;
  ASSERT_TRUE(sink.Write(0, 0, B(bytes), 64).ok());
  absl::StatusOr<std::string> c = sink.Commit();  // 'split' never completed
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("2 of 3 tensors delivered"), std::string::npos)
      << c.status();
  sink.Abort();  // what the receiver does after a failed commit
  EXPECT_EQ(events, (std::vector<std::string>{"begin 7", "abort 7"}));
  EXPECT_EQ(sink.Write(0, 0, B(bytes), 64).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(CallbackSinkTest, APartOfATensorTheManifestHasWholeIsRefusedNamingIt) {
  Recorded r;
  auto& [got, events, sink, m] = r;
  const std::vector<uint8_t> bytes = Iota(64, 0);
  ASSERT_TRUE(sink.Begin(m).ok());
  absl::Status s = sink.Write(0, 0, B(bytes), 32);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("tensor 'whole': segment [0, +32) of a tensor the manifest has whole"),
            std::string::npos)
      << s;
  EXPECT_TRUE(got.empty());
}

TEST(CallbackSinkTest, AbortTellsTheCallbackOnce) {
  Recorded r;
  auto& [got, events, sink, m] = r;
  ASSERT_TRUE(sink.Begin(m).ok());
  sink.Abort();
  sink.Abort();
  EXPECT_EQ(events, (std::vector<std::string>{"begin 7", "abort 7"}));
}

TEST(CallbackSinkGpuTest, DeviceTensorsStayOnTheGpuAndSplitOnesAreAssembledThere) {
  WC_SKIP_WITHOUT_GPU();
  std::vector<Got> got;
  std::vector<std::string> events;
  CallbackSink sink(Recording(got, events), /*device_tensors=*/true);
  ASSERT_TRUE(sink.TakesDeviceMemory());
  const GlobalManifest m = ThreeTensors();
  const std::vector<uint8_t> host0 = Iota(80, 1), host1 = Iota(24, 200);
  void* slot0 = nullptr;
  void* slot1 = nullptr;
  ASSERT_EQ(cudaMalloc(&slot0, 80), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&slot1, 24), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(slot0, host0.data(), 80, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(slot1, host1.data(), 24, cudaMemcpyHostToDevice), cudaSuccess);
  auto* d0 = static_cast<const std::byte*>(slot0);
  sink.SetWriteDevice(0);
  ASSERT_TRUE(sink.Begin(m).ok());
  // Begin made every buffer the version needs: none while buckets arrive.
  const uint64_t allocated = DeviceAllocations();
  ASSERT_TRUE(sink.Write(0, 0, d0, 64).ok());
  ASSERT_TRUE(sink.Write(1, 0, d0 + 64, 16).ok());
  ASSERT_TRUE(sink.EndBucket().ok());
  // The first slot is reused for a later bucket: the assembled tensor must
  // not depend on it.
  ASSERT_EQ(cudaMemset(slot0, 0xEE, 80), cudaSuccess);
  ASSERT_TRUE(sink.Write(1, 16, static_cast<const std::byte*>(slot1), 24).ok());
  ASSERT_TRUE(sink.EndBucket().ok());
  ASSERT_TRUE(sink.Commit().ok());
  EXPECT_EQ(DeviceAllocations(), allocated) << "device memory allocated while buckets arrived";
  // The next version reuses the arena.
  ASSERT_TRUE(sink.Begin(m).ok());
  EXPECT_EQ(DeviceAllocations(), allocated) << "the arena was not reused";
  sink.Abort();
  cudaFree(slot0);
  cudaFree(slot1);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].device, 0);
  EXPECT_EQ(got[0].bytes, std::vector<uint8_t>(host0.begin(), host0.begin() + 64));
  std::vector<uint8_t> want(host0.begin() + 64, host0.end());
  want.insert(want.end(), host1.begin(), host1.end());
  EXPECT_EQ(got[1].device, 0);
  EXPECT_EQ(got[1].bytes, want);
  EXPECT_TRUE(got[2].bytes.empty());
}

}  // namespace
}  // namespace weightcast
