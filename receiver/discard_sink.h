// DiscardSink: verifies and keeps nothing. For benchmarks of the data plane
// (weightcast-recv --discard), where writing a checkpoint would measure the
// disk: buckets still land, are checked against their checksums (on the GPU
// with NCCL) and count towards the vote, and no byte leaves the landing.
#ifndef WEIGHTCAST_RECEIVER_DISCARD_SINK_H_
#define WEIGHTCAST_RECEIVER_DISCARD_SINK_H_

#include <string>

#include "absl/strings/str_cat.h"
#include "receiver/sink.h"

namespace weightcast {

class DiscardSink final : public Sink {
 public:
  bool TakesDeviceMemory() const override { return true; }
  absl::Status Begin(const GlobalManifest& manifest) override {
    version_ = manifest.weight_version;
    return absl::OkStatus();
  }
  absl::Status Write(uint32_t, uint64_t, const std::byte*, uint64_t) override {
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> Commit() override {
    return absl::StrCat("version ", version_, " verified and discarded");
  }
  void Abort() override {}

 private:
  uint64_t version_ = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_DISCARD_SINK_H_
