// CallbackSink: hands each received tensor, whole, to a callback between a
// begin and a commit (or abort) of each version: what an inference engine
// embeds. A tensor that arrived in one segment is handed straight from the
// bucket buffer (valid only during the call); one split across buckets is
// assembled first (memory: the split tensors in flight, not the model).
//
// The engine must treat tensors delivered before an abort as not a version:
// it loads between its own begin and finalize, and discards on abort.
#ifndef WEIGHTCAST_RECEIVER_CALLBACK_SINK_H_
#define WEIGHTCAST_RECEIVER_CALLBACK_SINK_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "receiver/sink.h"

namespace weightcast {

struct ReceivedTensor {
  const TensorSpec* spec;
  const std::byte* data;
  uint64_t bytes;
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
  explicit CallbackSink(TensorCallbacks callbacks) : cb_(std::move(callbacks)) {}

  absl::Status Begin(const GlobalManifest& manifest) override;
  absl::Status Write(uint32_t tensor, uint64_t offset, const std::byte* data,
                     uint64_t bytes) override;
  absl::StatusOr<std::string> Commit() override;
  void Abort() override;

 private:
  TensorCallbacks cb_;
  const GlobalManifest* manifest_ = nullptr;
  // Split tensors being assembled: index -> (bytes so far, buffer).
  std::map<uint32_t, std::pair<uint64_t, std::vector<std::byte>>> partial_;
  uint64_t delivered_ = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_CALLBACK_SINK_H_
