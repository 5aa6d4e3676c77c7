// CallbackSink: hands each received tensor, whole, to a callback between a
// begin and a commit (or abort) of each version: what an inference engine
// embeds. A tensor that arrived in one segment is handed straight from the
// bucket buffer (valid only during the call); one split across buckets is
// assembled first, in an arena laid out from the manifest at Begin
// (receiver/hold_plan.h; memory: the split tensors in flight, not the
// model), so nothing is allocated while buckets arrive.
//
// With `device_tensors` on a device transport (NCCL) the tensors stay on
// the GPU: `data` is the verified landing slot itself (or a device buffer
// the split tensor was assembled in) and `device` says which GPU. The
// callback must be done reading it when it returns (synchronise the stream
// it copied on): the slot is reused for a later bucket.
//
// The engine must treat tensors delivered before an abort as not a version:
// it loads between its own begin and finalize, and discards on abort.
#ifndef WEIGHTCAST_RECEIVER_CALLBACK_SINK_H_
#define WEIGHTCAST_RECEIVER_CALLBACK_SINK_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "receiver/hold_plan.h"
#include "receiver/parameter_copier.h"
#include "receiver/sink.h"

namespace weightcast {

struct ReceivedTensor {
  const TensorSpec* spec;
  const std::byte* data;
  uint64_t bytes;
  int device = -1;  // -1: `data` is host memory; else the CUDA device it is on
};

struct TensorCallbacks {
  // Called once per version before any tensor. An error makes this rank
  // vote against the version.
  std::function<absl::Status(uint64_t version, const GlobalManifest&)> begin;
  std::function<absl::Status(const ReceivedTensor&)> tensor;
  // The group committed `version`: finalize (e.g. run the engine's
  // post-load step once). Returns a description of where it went.
  std::function<absl::StatusOr<std::string>(uint64_t version)> commit;
  std::function<void(uint64_t version)> abort;
};

class CallbackSink final : public Sink {
 public:
  explicit CallbackSink(TensorCallbacks callbacks, bool device_tensors = false)
      : cb_(std::move(callbacks)), device_tensors_(device_tensors) {}

  ~CallbackSink() override;

  bool TakesDeviceMemory() const override { return device_tensors_; }
  void SetWriteDevice(int device) override { write_device_ = device; }
  absl::Status Begin(const GlobalManifest& manifest) override;
  absl::Status Write(uint32_t tensor, uint64_t offset, const std::byte* data,
                     uint64_t bytes) override;
  absl::Status EndBucket() override;
  absl::Status Prepare() override;
  absl::StatusOr<std::string> Commit() override;
  void Abort() override;

 private:
  // Makes the copier for write_device_'s memory and an arena for `plan`.
  absl::Status ReadyHolds(const HoldPlan& plan);

  TensorCallbacks cb_;
  const bool device_tensors_;
  int write_device_ = -1;
  const GlobalManifest* manifest_ = nullptr;
  // Assembles split tensors in write_device_'s memory; made at the first
  // Begin with a split tensor. Before hold_, so it outlives the arena.
  std::unique_ptr<ParameterCopier> copier_;
  HoldPlan holds_;                     // the open version's split tensors
  CopierArena hold_;                   // their arena, kept while large enough
  // Split tensors being assembled: manifest index -> bytes so far.
  std::map<uint32_t, uint64_t> partial_;
  uint64_t delivered_ = 0;
  bool prepared_ = false;  // Prepare succeeded for the open version
};

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_CALLBACK_SINK_H_
