#include "receiver/callback_sink.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace weightcast {

absl::Status CallbackSink::Begin(const GlobalManifest& manifest) {
  if (copier_ != nullptr) (void)copier_->Wait();  // before buffers are freed
  manifest_ = &manifest;
  partial_.clear();
  delivered_ = 0;
  prepared_ = false;
  return cb_.begin ? cb_.begin(manifest.weight_version, manifest) : absl::OkStatus();
}

CallbackSink::~CallbackSink() {
  if (copier_ != nullptr) (void)copier_->Wait();
}

absl::Status CallbackSink::Append(const TensorSpec& spec, Partial& p, const std::byte* data,
                                  uint64_t bytes) {
  if (copier_ == nullptr || copier_->device() != write_device_) {
    if (copier_ != nullptr) RETURN_IF_ERROR(copier_->Wait());
    if (write_device_ < 0) {
      copier_ = NewHostParameterCopier();
    } else {
      ASSIGN_OR_RETURN(copier_, NewCudaParameterCopier(write_device_));
    }
  }
  if (p.buffer == nullptr) {
    absl::StatusOr<std::unique_ptr<CopierBuffer>> b = copier_->Allocate(spec.ByteSize());
    if (!b.ok()) {
      return absl::Status(b.status().code(),
                          absl::StrCat("tensor '", spec.name, "': ", b.status().message()));
    }
    p.buffer = *std::move(b);
  }
  absl::Status s = copier_->Copy(p.buffer->data() + p.have, data, bytes);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("tensor '", spec.name, "': ", s.message()));
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
  RETURN_IF_ERROR(copier_->Wait());  // the callback reads the whole tensor
  absl::Status s = cb_.tensor(ReceivedTensor{&t.spec, p.buffer->data(), total, write_device_});
  partial_.erase(tensor);
  ++delivered_;
  return s;
}

absl::Status CallbackSink::EndBucket() {
  // The bucket's slot is reused: the copies out of it must be done.
  return copier_ == nullptr ? absl::OkStatus() : copier_->Wait();
}

absl::Status CallbackSink::Prepare() {
  if (manifest_ == nullptr) return absl::FailedPreconditionError("Prepare before Begin");
  if (prepared_) return absl::OkStatus();
  const GlobalManifest& m = *manifest_;
  // On any failure below the version stays open, so that the Abort which
  // follows reaches the engine's abort callback.
  // Zero-byte tensors have no segment: hand them over now.
  for (const ManifestTensor& t : m.tensors) {
    if (t.spec.ByteSize() != 0) continue;
    if (absl::Status s = cb_.tensor(ReceivedTensor{&t.spec, nullptr, 0, write_device_}); !s.ok()) {
      return s;
    }
    ++delivered_;
  }
  if (delivered_ != m.tensors.size() || !partial_.empty()) {
    return absl::InternalError(absl::StrCat("version ", m.weight_version, ": ", delivered_,
                                            " of ", m.tensors.size(), " tensors delivered"));
  }
  prepared_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::string> CallbackSink::Commit() {
  if (manifest_ == nullptr) return absl::FailedPreconditionError("Commit before Begin");
  RETURN_IF_ERROR(Prepare());
  const uint64_t version = manifest_->weight_version;
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
  if (copier_ != nullptr) (void)copier_->Wait();  // before buffers are freed
  partial_.clear();
  if (cb_.abort) cb_.abort(version);
}

}  // namespace weightcast
