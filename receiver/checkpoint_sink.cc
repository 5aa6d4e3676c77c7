#include "receiver/checkpoint_sink.h"

#include "absl/strings/str_cat.h"

#include "common/status_macros.h"
#include "formats/layout.h"

namespace weightcast {

absl::Status CheckpointDirSink::Begin(const GlobalManifest& manifest) {
  Abort();
  // Versions only move forward here (a restarted sender does not know what
  // was published): refuse before any byte is written, so this rank votes no
  // with a reason instead of failing to publish after the vote.
  absl::StatusOr<uint64_t> latest = CheckpointWriter::ReadLatest(out_root_);
  if (latest.ok() && manifest.weight_version <= *latest) {
    return absl::FailedPreconditionError(absl::StrCat(
        "version ", manifest.weight_version, " is not newer than the published version ",
        *latest, " in ", out_root_));
  }
  std::vector<TensorSpec> specs;
  specs.reserve(manifest.tensors.size());
  for (const ManifestTensor& t : manifest.tensors) specs.push_back(t.spec);
  // The module lists of an FP8 config cover the whole group's tensors.
  ASSIGN_OR_RETURN(std::string config, SetQuantizationModules(manifest.config_json, specs));
  ASSIGN_OR_RETURN(writer_, CheckpointWriter::Begin(out_root_, manifest.weight_version,
                                                    std::move(specs), std::move(config),
                                                    max_shard_bytes_, file_mode_));
  return absl::OkStatus();
}

absl::Status CheckpointDirSink::Write(uint32_t tensor, uint64_t offset, const std::byte* data,
                                      uint64_t bytes) {
  if (writer_ == nullptr) return absl::FailedPreconditionError("Write before Begin");
  return writer_->Write(tensor, offset, data, bytes);
}

absl::Status CheckpointDirSink::Prepare() {
  if (writer_ == nullptr) return absl::FailedPreconditionError("Prepare before Begin");
  return writer_->Prepare();
}

absl::StatusOr<std::string> CheckpointDirSink::Commit() {
  if (writer_ == nullptr) return absl::FailedPreconditionError("Commit before Begin");
  absl::StatusOr<std::string> where = writer_->Commit();
  writer_.reset();
  return where;
}

void CheckpointDirSink::Abort() {
  if (writer_ != nullptr) {
    writer_->Abort();
    writer_.reset();
  }
}

}  // namespace weightcast
