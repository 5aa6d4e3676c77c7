#include "kernels/cuda_buffer.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_check.h"
#include "kernels/device_memory.h"
#include "kernels/gpu_device.h"

namespace weightcast {

absl::StatusOr<CudaStream> CudaStream::Create(int device, absl::string_view what) {
  absl::StatusOr<int> count = CudaDeviceCount();
  if (!count.ok()) return count.status();
  if (*count == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " on device ", device, ": no CUDA device (or driver) here"));
  }
  if (device < 0 || device >= *count) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": device ", device, " of ", *count, " CUDA devices"));
  }
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device), what, ", device ", device);
  cudaStream_t stream = nullptr;
  RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), what,
                       ", device ", device);
  return CudaStream(stream, device);
}

CudaStream::~CudaStream() {
  if (stream_ == nullptr) return;
  (void)cudaSetDevice(device_);
  (void)cudaStreamSynchronize(stream_);
  (void)cudaStreamDestroy(stream_);
}

absl::Status DeviceBuffer::Reserve(size_t bytes, int device) {
  if (data_ != nullptr && capacity_ >= bytes && device_ == device) return absl::OkStatus();
  Reset();
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device), "device ", device);
  void* p = nullptr;
  RETURN_IF_CUDA_ERROR(cudaMalloc(&p, bytes), bytes, " bytes on device ", device);
  CountDeviceMemory(static_cast<int64_t>(bytes));
  data_ = static_cast<std::byte*>(p);
  capacity_ = bytes;
  device_ = device;
  return absl::OkStatus();
}

void DeviceBuffer::Reset() {
  if (data_ != nullptr) {
    int current = 0;
    const bool restore = cudaGetDevice(&current) == cudaSuccess && current != device_;
    if (restore) (void)cudaSetDevice(device_);
    CountDeviceMemory(-static_cast<int64_t>(capacity_));
    (void)cudaFree(data_);
    if (restore) (void)cudaSetDevice(current);
  }
  data_ = nullptr;
  capacity_ = 0;
}

absl::Status PinnedBuffer::Reserve(size_t bytes) {
  if (data_ != nullptr && capacity_ >= bytes) return absl::OkStatus();
  Reset();
  if (bytes == 0) return absl::OkStatus();
  void* p = nullptr;
  RETURN_IF_CUDA_ERROR(cudaMallocHost(&p, bytes), bytes, " pinned host bytes");
  CountPinnedMemory(static_cast<int64_t>(bytes));
  data_ = static_cast<std::byte*>(p);
  capacity_ = bytes;
  return absl::OkStatus();
}

void PinnedBuffer::Reset() {
  if (data_ != nullptr) {
    CountPinnedMemory(-static_cast<int64_t>(capacity_));
    (void)cudaFreeHost(data_);
  }
  data_ = nullptr;
  capacity_ = 0;
}

}  // namespace weightcast
