// The CUDA ParameterCopier: one non-blocking stream; copy tables run by the
// pack kernel (kernels/pack_cuda.h), one launch per table.
#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda_buffer.h"
#include "kernels/cuda_check.h"
#include "kernels/pack_cuda.h"
#include "receiver/parameter_copier.h"

namespace weightcast {
namespace {

class CudaBuffer final : public CopierBuffer {
 public:
  std::byte* data() const override { return buffer_.data(); }
  DeviceBuffer buffer_;
};

class CudaParameterCopier final : public ParameterCopier {
 public:
  explicit CudaParameterCopier(CudaStream stream)
      : device_(stream.device()), stream_(std::move(stream)) {}

  int device() const override { return device_; }

  absl::StatusOr<std::unique_ptr<CopierBuffer>> Allocate(uint64_t bytes) override {
    auto b = std::make_unique<CudaBuffer>();
    RETURN_IF_ERROR(b->buffer_.Reserve(bytes, device_));
    return std::unique_ptr<CopierBuffer>(std::move(b));
  }

  absl::Status CopyFromHost(std::byte* dst, const std::byte* src, uint64_t n) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_), "device ", device_);
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream_.get()),
                         n, " bytes to device ", device_);
    return absl::OkStatus();
  }

  absl::Status Copy(std::byte* dst, const std::byte* src, uint64_t n) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_), "device ", device_);
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream_.get()),
                         n, " bytes on device ", device_);
    return absl::OkStatus();
  }

  absl::Status ReserveTable(size_t entries) override {
    const size_t need = CopyTableScratchBytes(entries);
    if (scratch_.capacity() >= need) return absl::OkStatus();
    // The previous table may still be read from the old scratch.
    RETURN_IF_ERROR(Wait());
    return scratch_.Reserve(need, device_);
  }

  absl::Status Run(std::span<const CopyEntry> table) override {
    if (table.empty()) return absl::OkStatus();
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_), "device ", device_);
    RETURN_IF_ERROR(ReserveTable(table.size()));
    RETURN_IF_CUDA_ERROR(
        LaunchCopyTable(table.data(), table.size(), scratch_.data(), stream_.get()),
        "copy table of ", table.size(), " entries on device ", device_);
    return absl::OkStatus();
  }

  absl::Status Wait() override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_), "device ", device_);
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_.get()), "copies on device ", device_);
    return absl::OkStatus();
  }

 private:
  const int device_;
  DeviceBuffer scratch_;
  // Last: destroyed first, so its work ends before the scratch is freed.
  CudaStream stream_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ParameterCopier>> NewCudaParameterCopier(int device) {
  ASSIGN_OR_RETURN(CudaStream stream, CudaStream::Create(device, "GPU parameter sink"));
  return std::unique_ptr<ParameterCopier>(
      std::make_unique<CudaParameterCopier>(std::move(stream)));
}

}  // namespace weightcast
