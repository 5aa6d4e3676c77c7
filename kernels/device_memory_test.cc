// The data plane's memory accounting: the counters and their peak, and
// DeviceBuffer / PinnedBuffer counting what they hold (on a GPU, or the
// host twin's pretend one).
#include "kernels/device_memory.h"

#include "gtest/gtest.h"
#include "kernels/cuda_buffer.h"
#include "kernels/gpu_device.h"

namespace weightcast {
namespace {

TEST(DeviceMemoryTest, CountsAndKeepsThePeak) {
  const DeviceMemoryUse before = CurrentDeviceMemoryUse();
  CountDeviceMemory(1000);
  CountDeviceMemory(500);
  CountDeviceMemory(-1000);
  CountPinnedMemory(64);
  const DeviceMemoryUse after = CurrentDeviceMemoryUse();
  EXPECT_EQ(after.device_bytes, before.device_bytes + 500);
  EXPECT_EQ(after.device_peak_bytes, std::max(before.device_peak_bytes, before.device_bytes + 1500));
  EXPECT_EQ(after.pinned_bytes, before.pinned_bytes + 64);
  CountDeviceMemory(-500);
  CountPinnedMemory(-64);
  EXPECT_EQ(CurrentDeviceMemoryUse().device_bytes, before.device_bytes);
  EXPECT_EQ(CurrentDeviceMemoryUse().device_peak_bytes, after.device_peak_bytes);
}

TEST(DeviceMemoryGpuTest, BuffersCountWhatTheyHold) {
  WC_SKIP_WITHOUT_GPU();
  const DeviceMemoryUse start = CurrentDeviceMemoryUse();
  {
    DeviceBuffer a, b;
    PinnedBuffer h;
    ASSERT_TRUE(a.Reserve(1 << 20, 0).ok());
    ASSERT_TRUE(b.Reserve(4096, 0).ok());
    ASSERT_TRUE(h.Reserve(8192).ok());
    EXPECT_EQ(CurrentDeviceMemoryUse().device_bytes, start.device_bytes + (1 << 20) + 4096);
    EXPECT_EQ(CurrentDeviceMemoryUse().pinned_bytes, start.pinned_bytes + 8192);
    ASSERT_TRUE(a.Reserve(1000, 0).ok());  // large enough: kept, not counted again
    ASSERT_TRUE(b.Reserve(2 << 20, 0).ok());  // grows: the old one is freed first
    EXPECT_EQ(CurrentDeviceMemoryUse().device_bytes, start.device_bytes + (3 << 20));
    EXPECT_GE(CurrentDeviceMemoryUse().device_peak_bytes, start.device_bytes + (3 << 20));
  }
  EXPECT_EQ(CurrentDeviceMemoryUse().device_bytes, start.device_bytes);
  EXPECT_EQ(CurrentDeviceMemoryUse().pinned_bytes, start.pinned_bytes);
}

}  // namespace
}  // namespace weightcast
