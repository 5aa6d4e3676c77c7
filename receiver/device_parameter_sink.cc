#include "receiver/device_parameter_sink.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda_check.h"

namespace weightcast {

DeviceParameterSink::DeviceParameterSink(int device,
                                         absl::flat_hash_map<std::string, DeviceTarget> targets,
                                         Mode mode)
    : device_(device), targets_(std::move(targets)), mode_(mode) {}

absl::Status DeviceParameterSink::EnsureStream() {
  if (!stream_.has_value()) {
    ASSIGN_OR_RETURN(CudaStream s, CudaStream::Create(device_, "GPU parameter sink"));
    stream_.emplace(std::move(s));
  }
  return absl::OkStatus();
}

absl::Status DeviceParameterSink::Begin(const GlobalManifest& manifest) {
  // Set only once everything is ready: after a failed Begin, Write and
  // Commit refuse instead of reaching unchecked targets.
  manifest_ = nullptr;
  by_tensor_.assign(manifest.tensors.size(), nullptr);
  written_.assign(manifest.tensors.size(), 0);
  shadows_.clear();
  for (size_t i = 0; i < manifest.tensors.size(); ++i) {
    const TensorSpec& spec = manifest.tensors[i].spec;
    auto it = targets_.find(spec.name);
    if (it == targets_.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("tensor '", spec.name, "' has no target parameter on this rank"));
    }
    if (it->second.bytes != spec.ByteSize() ||
        (it->second.data == nullptr && it->second.bytes != 0)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "tensor '", spec.name, "': ", spec.ByteSize(), " bytes arrive, its target has ",
          it->second.bytes));
    }
    by_tensor_[i] = &it->second;
  }
  if (manifest.tensors.size() != targets_.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the version has ", manifest.tensors.size(), " tensors, this rank has ", targets_.size(),
        " target parameters"));
  }
  RETURN_IF_ERROR(EnsureStream());
  if (mode_ == Mode::kStaged) {
    shadows_ = std::vector<DeviceBuffer>(manifest.tensors.size());
    for (size_t i = 0; i < shadows_.size(); ++i) {
      absl::Status s = shadows_[i].Reserve(by_tensor_[i]->bytes, device_);
      if (!s.ok()) {
        shadows_.clear();
        return absl::Status(s.code(), absl::StrCat("staging tensor '",
                                                   manifest.tensors[i].spec.name, "': ",
                                                   s.message()));
      }
    }
  }
  manifest_ = &manifest;
  return absl::OkStatus();
}

absl::Status DeviceParameterSink::Write(uint32_t tensor, uint64_t offset, const std::byte* data,
                                        uint64_t bytes) {
  if (manifest_ == nullptr || tensor >= by_tensor_.size()) {
    return absl::InternalError("write outside a version");
  }
  const DeviceTarget& t = *by_tensor_[tensor];
  if (offset > t.bytes || bytes > t.bytes - offset) {
    return absl::InternalError(absl::StrCat("tensor '", manifest_->tensors[tensor].spec.name,
                                            "': write past its end"));
  }
  std::byte* dst = mode_ == Mode::kStaged ? shadows_[tensor].data()
                                          : static_cast<std::byte*>(t.data);
  if (mode_ == Mode::kInPlace) dirty_ = true;
  // Writes come from the receiver's consumer threads: set the device here.
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device_), "device ", device_);
  // From the verified device slot (NCCL), or from host memory (gloo).
  const cudaMemcpyKind kind =
      write_device_ >= 0 ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice;
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst + offset, data, bytes, kind, stream_->get()),
                       "tensor '", manifest_->tensors[tensor].spec.name, "'");
  // Waited for once per bucket, in EndBucket.
  written_[tensor] += bytes;
  return absl::OkStatus();
}

absl::Status DeviceParameterSink::EndBucket() {
  if (!stream_.has_value()) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_->get()), "copies into the parameters");
  return absl::OkStatus();
}

absl::StatusOr<std::string> DeviceParameterSink::Commit() {
  if (manifest_ == nullptr) return absl::InternalError("commit outside a version");
  for (size_t i = 0; i < written_.size(); ++i) {
    if (written_[i] != by_tensor_[i]->bytes) {
      return absl::InternalError(absl::StrCat("tensor '", manifest_->tensors[i].spec.name, "': ",
                                              written_[i], " of ", by_tensor_[i]->bytes,
                                              " bytes arrived"));
    }
  }
  cudaStream_t stream = stream_->get();
  if (mode_ == Mode::kStaged) {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    for (size_t i = 0; i < shadows_.size(); ++i) {
      RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(by_tensor_[i]->data, shadows_[i].data(),
                                           by_tensor_[i]->bytes, cudaMemcpyDeviceToDevice,
                                           stream),
                           "tensor '", manifest_->tensors[i].spec.name, "'");
    }
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream));
    shadows_.clear();
  }
  const uint64_t version = manifest_->weight_version;
  manifest_ = nullptr;
  dirty_ = false;  // the parameters hold a whole version again
  return absl::StrCat("version ", version, " in ", written_.size(), " GPU parameters");
}

void DeviceParameterSink::Abort() {
  manifest_ = nullptr;
  shadows_.clear();
}

}  // namespace weightcast
