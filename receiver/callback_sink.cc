#include "receiver/callback_sink.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace weightcast {

absl::Status CallbackSink::Begin(const GlobalManifest& manifest) {
  if (copier_ != nullptr) (void)copier_->Wait();  // before the arena is reused
  manifest_ = nullptr;
  partial_.clear();
  delivered_ = 0;
  prepared_ = false;
  // Until the arena is ready the version is not open: an Abort after a
  // failure here reaches no callback, as none has begun.
  holds_ = PlanHolds(manifest, [](uint32_t) { return true; });
  RETURN_IF_ERROR(ReadyHolds(holds_));
  manifest_ = &manifest;
  return cb_.begin ? cb_.begin(manifest.weight_version, manifest) : absl::OkStatus();
}

absl::Status CallbackSink::ReadyHolds(const HoldPlan& plan) {
  if (plan.arena_bytes == 0) return absl::OkStatus();
  if (copier_ == nullptr || copier_->device() != write_device_) {
    hold_.Reset();  // in the old copier's memory
    copier_.reset();
    if (write_device_ < 0) {
      copier_ = NewHostParameterCopier();
    } else {
      ASSIGN_OR_RETURN(copier_, NewCudaParameterCopier(write_device_));
    }
  }
  return hold_.Reserve(*copier_, plan.arena_bytes, "holding the split tensors");
}

CallbackSink::~CallbackSink() {
  if (copier_ != nullptr) (void)copier_->Wait();
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
  uint64_t& have = partial_[tensor];
  if (offset + bytes > total || offset != have) {
    return absl::InternalError(absl::StrCat("tensor '", t.spec.name, "': segment out of order"));
  }
  if (!holds_.Holds(tensor)) {
    return absl::InternalError(absl::StrCat("tensor '", t.spec.name, "': segment [", offset,
                                            ", +", bytes, ") of a tensor the manifest has whole"));
  }
  std::byte* held = hold_.data() + holds_.offset[tensor];
  if (absl::Status s = copier_->Copy(held + offset, data, bytes); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("tensor '", t.spec.name, "': ", s.message()));
  }
  have += bytes;
  if (have < total) return absl::OkStatus();
  RETURN_IF_ERROR(copier_->Wait());  // the callback reads the whole tensor
  absl::Status s = cb_.tensor(ReceivedTensor{&t.spec, held, total, write_device_});
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
