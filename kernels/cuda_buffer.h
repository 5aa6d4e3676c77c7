// Owned CUDA memory that grows on demand: device buffers for staging
// buckets and kernel scratch, pinned host buffers for asynchronous copies.
//
//   DeviceBuffer slot;
//   RETURN_IF_ERROR(slot.Reserve(bucket_bytes, device));
//   ... slot.data() ...
//
// Reserve keeps the memory when it is already large enough, so a pipeline
// reserving per update allocates once. Memory is freed on destruction (or
// Reset) on the device it was allocated on. Not thread-safe.
#ifndef WEIGHTCAST_KERNELS_CUDA_BUFFER_H_
#define WEIGHTCAST_KERNELS_CUDA_BUFFER_H_

#include <cstddef>

#include "absl/status/status.h"

namespace weightcast {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // At least `bytes` bytes of device memory on `device` (contents undefined
  // after a growth). INTERNAL naming the size when cudaMalloc fails.
  [[nodiscard]] absl::Status Reserve(size_t bytes, int device);
  void Reset();

  [[nodiscard]] std::byte* data() const { return data_; }
  [[nodiscard]] size_t capacity() const { return capacity_; }

 private:
  std::byte* data_ = nullptr;
  size_t capacity_ = 0;
  int device_ = 0;
};

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { Reset(); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  // At least `bytes` bytes of page-locked host memory (cudaMallocHost).
  [[nodiscard]] absl::Status Reserve(size_t bytes);
  void Reset();

  [[nodiscard]] std::byte* data() const { return data_; }
  [[nodiscard]] size_t capacity() const { return capacity_; }

 private:
  std::byte* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_CUDA_BUFFER_H_
