// What the data plane holds of GPU memory and of pinned host memory in this
// process, counted where it allocates (DeviceBuffer, PinnedBuffer, the NCCL
// transport's staging), with the peak since the process started: a
// daemon's own footprint, which its status and metrics report and the GPU
// benchmark compares with 2 x the bucket size. The CUDA context's and
// NCCL's own buffers are not in it (nvidia-smi shows those).
//
// Thread-safe (atomics); a buffer counts its bytes while it holds them.
#ifndef WEIGHTCAST_KERNELS_DEVICE_MEMORY_H_
#define WEIGHTCAST_KERNELS_DEVICE_MEMORY_H_

#include <cstdint>

namespace weightcast {

struct DeviceMemoryUse {
  uint64_t device_bytes = 0;       // cudaMalloc'ed by the data plane, now
  uint64_t device_peak_bytes = 0;  // the most at any time
  uint64_t pinned_bytes = 0;       // cudaMallocHost'ed, now
  uint64_t pinned_peak_bytes = 0;
};

[[nodiscard]] DeviceMemoryUse CurrentDeviceMemoryUse();

// Called with +bytes after an allocation succeeded and -bytes before its free.
void CountDeviceMemory(int64_t delta);
void CountPinnedMemory(int64_t delta);

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_DEVICE_MEMORY_H_
