#include "receiver/callback_sink.h"

#include <cuda_runtime_api.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda_check.h"

namespace weightcast {

absl::Status CallbackSink::Begin(const GlobalManifest& manifest) {
  manifest_ = &manifest;
  partial_.clear();
  delivered_ = 0;
  return cb_.begin ? cb_.begin(manifest.weight_version, manifest) : absl::OkStatus();
}

absl::Status CallbackSink::Append(const TensorSpec& spec, Partial& p, const std::byte* data,
                                  uint64_t bytes) {
  if (write_device_ < 0) {
    if (p.host.empty()) p.host.resize(spec.ByteSize());
    std::memcpy(p.host.data() + p.have, data, bytes);
    return absl::OkStatus();
  }
  if (!stream_.has_value()) {
    ASSIGN_OR_RETURN(CudaStream s, CudaStream::Create(write_device_, "device tensor assembly"));
    stream_.emplace(std::move(s));
  }
  RETURN_IF_CUDA_ERROR(cudaSetDevice(write_device_), "tensor '", spec.name, "'");
  if (p.have == 0) {
    absl::Status s = p.device.Reserve(spec.ByteSize(), write_device_);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("tensor '", spec.name, "': ", s.message()));
  }
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(p.device.data() + p.have, data, bytes,
                                       cudaMemcpyDeviceToDevice, stream_->get()),
                       "tensor '", spec.name, "'");
  // Split tensors are the few larger than a bucket: wait per segment.
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_->get()), "tensor '", spec.name, "'");
  return absl::OkStatus();
}

absl::Status CallbackSink::Write(uint32_t tensor, uint64_t offset, const std::byte* data,
                                 uint64_t bytes) {
  if (manifest_ == nullptr || tensor >= manifest_->tensors.size()) {
    return absl::FailedPreconditionError("Write outside Begin/Commit or unknown tensor");
  }
  const ManifestTensor& t = manifest_->tensors[tensor];
  const uint64_t total = t.spec.ByteSize();
  if (offset == 0 && bytes == total) {
    ++delivered_;
    return cb_.tensor(ReceivedTensor{&t.spec, data, bytes, write_device_});
  }
  Partial& p = partial_[tensor];
  if (offset + bytes > total || offset != p.have) {
    return absl::InternalError(absl::StrCat("tensor '", t.spec.name, "': segment out of order"));
  }
  RETURN_IF_ERROR(Append(t.spec, p, data, bytes));
  p.have += bytes;
  if (p.have < total) return absl::OkStatus();
  const std::byte* whole = write_device_ < 0 ? p.host.data() : p.device.data();
  absl::Status s = cb_.tensor(ReceivedTensor{&t.spec, whole, total, write_device_});
  partial_.erase(tensor);
  ++delivered_;
  return s;
}

absl::StatusOr<std::string> CallbackSink::Commit() {
  if (manifest_ == nullptr) return absl::FailedPreconditionError("Commit before Begin");
  const GlobalManifest& m = *manifest_;
  const uint64_t version = m.weight_version;
  // On any failure below the version stays open, so that the Abort which
  // follows a failed Commit reaches the engine's abort callback.
  // Zero-byte tensors have no segment: hand them over now.
  for (const ManifestTensor& t : m.tensors) {
    if (t.spec.ByteSize() != 0) continue;
    if (absl::Status s = cb_.tensor(ReceivedTensor{&t.spec, nullptr, 0, write_device_}); !s.ok()) {
      return s;
    }
    ++delivered_;
  }
  if (delivered_ != m.tensors.size() || !partial_.empty()) {
    return absl::InternalError(absl::StrCat("version ", version, ": ", delivered_, " of ",
                                            m.tensors.size(), " tensors delivered"));
  }
  absl::StatusOr<std::string> where =
      cb_.commit ? cb_.commit(version)
                 : absl::StatusOr<std::string>(
                       absl::StrCat("version ", version, ": ", delivered_, " tensors delivered"));
  if (where.ok()) manifest_ = nullptr;
  return where;
}

void CallbackSink::Abort() {
  if (manifest_ == nullptr) return;
  const uint64_t version = manifest_->weight_version;
  manifest_ = nullptr;
  partial_.clear();
  if (cb_.abort) cb_.abort(version);
}

}  // namespace weightcast
