// CheckpointDirSink: writes each version as a Hugging Face checkpoint
// (sharded safetensors + model.safetensors.index.json + config.json) into a
// temporary directory; Prepare finishes and syncs every file (the next
// LATEST included), Commit renames it to OUT/step_<version> and replaces
// OUT/LATEST (common/checkpoint.h). Abort removes the temporary files;
// earlier versions are never touched.
#ifndef WEIGHTCAST_RECEIVER_CHECKPOINT_SINK_H_
#define WEIGHTCAST_RECEIVER_CHECKPOINT_SINK_H_

#include <memory>
#include <string>

#include "common/checkpoint.h"
#include "receiver/sink.h"

namespace weightcast {

class CheckpointDirSink final : public Sink {
 public:
  // `file_mode`: permission bits of the files written (CheckpointWriter).
  CheckpointDirSink(std::string out_root, uint64_t max_shard_bytes,
                    uint32_t file_mode = CheckpointWriter::kDefaultFileMode)
      : out_root_(std::move(out_root)), max_shard_bytes_(max_shard_bytes),
        file_mode_(file_mode) {}
  ~CheckpointDirSink() override { Abort(); }

  absl::Status Begin(const GlobalManifest& manifest) override;
  absl::Status Write(uint32_t tensor, uint64_t offset, const std::byte* data,
                     uint64_t bytes) override;
  absl::Status Prepare() override;
  absl::StatusOr<std::string> Commit() override;
  void Abort() override;

 private:
  std::string out_root_;
  uint64_t max_shard_bytes_;
  uint32_t file_mode_;
  std::unique_ptr<CheckpointWriter> writer_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_CHECKPOINT_SINK_H_
