#include "receiver/callback_sink.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace weightcast {

absl::Status CallbackSink::Begin(const GlobalManifest& manifest) {
  manifest_ = &manifest;
  partial_.clear();
  delivered_ = 0;
  return cb_.begin ? cb_.begin(manifest.weight_version, manifest) : absl::OkStatus();
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
    return cb_.tensor(ReceivedTensor{&t.spec, data, bytes});
  }
  auto& [have, buffer] = partial_[tensor];
  if (buffer.empty()) buffer.resize(total);
  if (offset + bytes > total || offset != have) {
    return absl::InternalError(absl::StrCat("tensor '", t.spec.name, "': segment out of order"));
  }
  std::memcpy(buffer.data() + offset, data, bytes);
  have += bytes;
  if (have < total) return absl::OkStatus();
  absl::Status s = cb_.tensor(ReceivedTensor{&t.spec, buffer.data(), total});
  partial_.erase(tensor);
  ++delivered_;
  return s;
}

absl::StatusOr<std::string> CallbackSink::Commit() {
  if (manifest_ == nullptr) return absl::FailedPreconditionError("Commit before Begin");
  const GlobalManifest& m = *manifest_;
  const uint64_t version = m.weight_version;
  manifest_ = nullptr;
  // Zero-byte tensors have no segment: hand them over now.
  for (const ManifestTensor& t : m.tensors) {
    if (t.spec.ByteSize() != 0) continue;
    if (absl::Status s = cb_.tensor(ReceivedTensor{&t.spec, nullptr, 0}); !s.ok()) return s;
    ++delivered_;
  }
  if (delivered_ != m.tensors.size() || !partial_.empty()) {
    return absl::InternalError(absl::StrCat("version ", version, ": ", delivered_, " of ",
                                            m.tensors.size(), " tensors delivered"));
  }
  if (cb_.commit) return cb_.commit(version);
  return absl::StrCat("version ", version, ": ", delivered_, " tensors delivered");
}

void CallbackSink::Abort() {
  if (manifest_ == nullptr) return;
  const uint64_t version = manifest_->weight_version;
  manifest_ = nullptr;
  partial_.clear();
  if (cb_.abort) cb_.abort(version);
}

}  // namespace weightcast
