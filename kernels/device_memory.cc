#include "kernels/device_memory.h"

#include <atomic>

namespace weightcast {
namespace {

struct Counter {
  std::atomic<uint64_t> now{0};
  std::atomic<uint64_t> peak{0};

  void Add(int64_t delta) {
    const uint64_t after = now.fetch_add(static_cast<uint64_t>(delta)) + static_cast<uint64_t>(delta);
    if (delta <= 0) return;
    uint64_t seen = peak.load();
    while (after > seen && !peak.compare_exchange_weak(seen, after)) {
    }
  }
};

Counter& Device() {
  static Counter c;
  return c;
}

Counter& Pinned() {
  static Counter c;
  return c;
}

}  // namespace

DeviceMemoryUse CurrentDeviceMemoryUse() {
  return DeviceMemoryUse{.device_bytes = Device().now.load(),
                         .device_peak_bytes = Device().peak.load(),
                         .pinned_bytes = Pinned().now.load(),
                         .pinned_peak_bytes = Pinned().peak.load()};
}

void CountDeviceMemory(int64_t delta) { Device().Add(delta); }
void CountPinnedMemory(int64_t delta) { Pinned().Add(delta); }

}  // namespace weightcast
