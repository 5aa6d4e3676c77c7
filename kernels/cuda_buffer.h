// Owned CUDA resources: memory that grows on demand (device buffers for
// staging buckets and kernel scratch, pinned host buffers for asynchronous
// copies) and the non-blocking streams the data plane's stages run on.
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
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace weightcast {

// A non-blocking CUDA stream on one device. Destruction waits for the work
// enqueued on it (buffers it reads may be freed right after) and destroys it.
class CudaStream {
 public:
  // Checks that `device` exists (FAILED_PRECONDITION naming `what` when
  // there is no CUDA device or driver, or the ordinal is out of range) and
  // makes the stream there; INTERNAL on CUDA errors.
  [[nodiscard]] static absl::StatusOr<CudaStream> Create(int device, absl::string_view what);

  CudaStream(CudaStream&& other) noexcept
      : stream_(other.stream_), device_(other.device_) {
    other.stream_ = nullptr;
  }
  CudaStream& operator=(CudaStream&&) = delete;
  CudaStream(const CudaStream&) = delete;
  ~CudaStream();

  [[nodiscard]] CUstream_st* get() const { return stream_; }
  [[nodiscard]] int device() const { return device_; }

 private:
  CudaStream(CUstream_st* stream, int device) : stream_(stream), device_(device) {}
  CUstream_st* stream_;
  int device_;
};

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
