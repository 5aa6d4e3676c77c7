#include "receiver/cuda_bucket_landing.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/checksum_cuda.h"
#include "kernels/checksum_gpu.h"
#include "kernels/cuda_buffer.h"
#include "kernels/cuda_check.h"

namespace weightcast {
namespace {

class CudaBucketLanding final : public BucketLanding {
 public:
  explicit CudaBucketLanding(CudaStream stream)
      : device_(stream.device()), stream_(stream.get()), owned_stream_(std::move(stream)) {}

  bool device() const override { return true; }

  absl::Status Reserve(size_t bytes) override {
    for (DeviceBuffer& s : slots_) RETURN_IF_ERROR(s.Reserve(bytes, device_));
    for (DeviceBuffer& d : digests_) {
      RETURN_IF_ERROR(d.Reserve(NumChecksumChunks(bytes) * sizeof(uint64_t), device_));
    }
    for (PinnedBuffer& t : trailers_) RETURN_IF_ERROR(t.Reserve(kBucketTrailerBytes));
    slot_bytes_ = bytes;
    return absl::OkStatus();
  }
  std::byte* slot(int i) override { return slots_[i].data(); }

  absl::StatusOr<const std::byte*> Verify(int i, const GlobalBucket& b, uint32_t g,
                                          uint64_t weight_version, bool device_payload) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_), "bucket ", g);
    const std::byte* data = slots_[i].data();
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(trailers_[i].data(), data + b.bytes, kBucketTrailerBytes,
                                         cudaMemcpyDeviceToHost, stream_),
                         "bucket ", g);
    // Waits for the stream, so the trailer copy is done too.
    ASSIGN_OR_RETURN(uint64_t checksum,
                     DeviceBucketChecksum(data, b.bytes,
                                          reinterpret_cast<uint64_t*>(digests_[i].data()),
                                          stream_));
    RETURN_IF_ERROR(CheckBucket(b, g, weight_version, trailers_[i].data(), checksum));
    if (device_payload) return data;
    RETURN_IF_ERROR(host_[i].Reserve(slot_bytes_));
    RETURN_IF_CUDA_ERROR(
        cudaMemcpyAsync(host_[i].data(), data, b.bytes, cudaMemcpyDeviceToHost, stream_),
        "bucket ", g);
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_), "bucket ", g);
    return static_cast<const std::byte*>(host_[i].data());
  }

  absl::Status FlipBit(int i, size_t offset) override {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    // On the landing's own stream: the legacy default stream does not order
    // against a non-blocking one, so a plain cudaMemcpy could race the
    // bucket's transfer.
    std::byte b{};
    RETURN_IF_CUDA_ERROR(
        cudaMemcpyAsync(&b, slots_[i].data() + offset, 1, cudaMemcpyDeviceToHost, stream_));
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_));
    b ^= std::byte{0x01};
    RETURN_IF_CUDA_ERROR(
        cudaMemcpyAsync(slots_[i].data() + offset, &b, 1, cudaMemcpyHostToDevice, stream_));
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

 private:
  const int device_;
  const cudaStream_t stream_;
  DeviceBuffer slots_[2];
  DeviceBuffer digests_[2];
  PinnedBuffer trailers_[2];
  PinnedBuffer host_[2];
  size_t slot_bytes_ = 0;
  // Last: destroyed first, so its work is done before the buffers are freed.
  CudaStream owned_stream_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<BucketLanding>> NewCudaBucketLanding(int device) {
  ASSIGN_OR_RETURN(CudaStream stream, CudaStream::Create(device, "GPU receive buffers"));
  return std::unique_ptr<BucketLanding>(std::make_unique<CudaBucketLanding>(std::move(stream)));
}

}  // namespace weightcast
