// Hugging Face style checkpoint directories: *.safetensors shards, optional
// model.safetensors.index.json and config.json.
//
// CheckpointDir reads one (what a sender registers). CheckpointWriter writes
// one version for a receiver in two phases. Prepare does everything that
// can fail for want of space or a bad disk: every file of the version
// (shards, index, config) and the next OUT/LATEST, written and synced in
// temporary names. Commit then only renames: the temporary directory to
// OUT/step_<version>, then the prepared LATEST over OUT/LATEST. Abort, or
// destruction without Commit, removes the temporary files: readers never
// see a partial version, nor a step_<version> that LATEST does not name.
#ifndef WEIGHTCAST_COMMON_CHECKPOINT_H_
#define WEIGHTCAST_COMMON_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/safetensors.h"
#include "common/tensor_spec.h"

namespace weightcast {

struct CheckpointTensor {
  TensorSpec spec;
  std::string path;          // the shard file
  uint64_t file_offset = 0;  // absolute offset of its bytes in that file
  const std::byte* data = nullptr;  // in the shard's mapping (kept by the dir)
};

class CheckpointDir {
 public:
  // NOT_FOUND when `dir` is missing or has no *.safetensors; INVALID_ARGUMENT
  // for a malformed shard, a tensor in two shards (naming both), an index
  // that disagrees with the shards, or a config.json that is not an object.
  [[nodiscard]] static absl::StatusOr<CheckpointDir> Open(const std::string& dir);

  // Shards sorted by file name, tensors in file order.
  [[nodiscard]] const std::vector<CheckpointTensor>& tensors() const { return tensors_; }
  [[nodiscard]] const std::string& config_json() const { return config_json_; }
  // The tensors as sources for the packer, valid while this object lives.
  [[nodiscard]] std::vector<HostSource> sources() const;

 private:
  std::vector<std::shared_ptr<MappedFile>> files_;  // keeps `data` valid
  std::vector<CheckpointTensor> tensors_;
  std::string config_json_;
};

class CheckpointWriter {
 public:
  // Plans shards of at most `max_shard_bytes` (tensors in the given order; a
  // tensor larger than that gets a shard of its own), names them
  // model-0000i-of-0000n.safetensors (model.safetensors when one), and
  // creates them, with their space reserved, in
  // OUT/.tmp-step_<version>-<pid>-<n>. Files get permission bits
  // `file_mode` (directories the same plus search where read is allowed).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<CheckpointWriter>> Begin(
      const std::string& out_root, uint64_t version, std::vector<TensorSpec> tensors,
      std::string config_json, uint64_t max_shard_bytes, uint32_t file_mode = kDefaultFileMode);
  static constexpr uint32_t kDefaultFileMode = 0640;
  ~CheckpointWriter();

  // Bytes [offset, offset + bytes) of tensor `index` (in Begin's order).
  [[nodiscard]] absl::Status Write(size_t index, uint64_t offset, const std::byte* data,
                                   uint64_t bytes);
  // Finishes every shard (FAILED_PRECONDITION naming a tensor not fully
  // written), writes model.safetensors.index.json, config.json and the next
  // LATEST, and syncs them. FAILED_PRECONDITION when OUT/step_<version>
  // exists already; RESOURCE_EXHAUSTED / INTERNAL naming the file for I/O
  // errors. Nothing is visible in OUT afterwards.
  [[nodiscard]] absl::Status Prepare();
  // Prepares when that was not done, then renames into OUT/step_<version>
  // and replaces OUT/LATEST. Should the second rename fail, the first is
  // undone: OUT shows the previous version. Returns the final directory.
  [[nodiscard]] absl::StatusOr<std::string> Commit();
  void Abort();

  // The shard each tensor goes to (file names), for tests.
  [[nodiscard]] std::vector<std::string> ShardNames() const;

  // Removes .tmp-step_* directories left by crashed runs.
  [[nodiscard]] static absl::Status CleanStaleTemps(const std::string& out_root);
  // Removes OUT/step_<v> directories but the newest `keep` (keep >= 1),
  // never the one LATEST names. Returns how many were removed; INTERNAL
  // naming the directory that could not be removed.
  [[nodiscard]] static absl::StatusOr<size_t> KeepNewest(const std::string& out_root, size_t keep);
  // The version in OUT/LATEST; NOT_FOUND when none was committed.
  [[nodiscard]] static absl::StatusOr<uint64_t> ReadLatest(const std::string& out_root);

 private:
  CheckpointWriter() = default;
  std::string out_root_;
  std::string tmp_dir_;
  uint64_t version_ = 0;
  std::string config_json_;
  uint32_t file_mode_ = kDefaultFileMode;
  std::string latest_tmp_;  // the prepared LATEST; empty until Prepare
  std::vector<TensorSpec> tensors_;
  std::vector<std::string> shard_names_;                        // per shard
  std::vector<std::unique_ptr<SafetensorsFileWriter>> shards_;  // per shard
  std::vector<std::pair<size_t, size_t>> where_;                // tensor -> (shard, index)
  bool prepared_ = false;
  bool done_ = false;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CHECKPOINT_H_
