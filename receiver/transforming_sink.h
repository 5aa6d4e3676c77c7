// TransformingSink: applies a receiver-side layout (the vLLM FusedMoE layout
// for this rank's TP/EP slice) between the wire and another sink. Tensors
// that pass through whole stream straight to the inner sink; tensors that
// feed an assembled output (e.g. w13_weight) are held until every source of
// that output has arrived, then packed with the same addressing code as
// the sender and handed on, and freed. Experts this rank does not own are
// dropped as they arrive.
#ifndef WEIGHTCAST_RECEIVER_TRANSFORMING_SINK_H_
#define WEIGHTCAST_RECEIVER_TRANSFORMING_SINK_H_

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "common/output_tensor.h"
#include "formats/vllm_layout.h"
#include "receiver/layout_builder.h"
#include "receiver/sink.h"

namespace weightcast {

class TransformingSink final : public Sink {
 public:
  TransformingSink(Sink* inner, LayoutBuilder builder)
      : inner_(inner), builder_(std::move(builder)) {}

  absl::Status Begin(const GlobalManifest& manifest) override;
  absl::Status Write(uint32_t tensor, uint64_t offset, const std::byte* data,
                     uint64_t bytes) override;
  absl::Status Prepare() override;
  absl::StatusOr<std::string> Commit() override;
  void Abort() override;

 private:
  absl::Status Produce(size_t output);

  Sink* inner_;
  LayoutBuilder builder_;
  GlobalManifest derived_;            // what the inner sink sees
  std::vector<TensorSpec> received_;
  // What Produce packs from: per received tensor, its held bytes once all
  // of them arrived (else nullptr). Kept for the version, so producing an
  // output costs its pieces, not the number of tensors.
  std::vector<HostSource> sources_;
  std::vector<OutputTensor> outputs_;
  std::vector<int64_t> direct_;       // received -> output it is, or -1
  std::vector<std::vector<size_t>> dependents_;  // received -> assembled outputs
  std::vector<size_t> missing_sources_;          // output -> sources not complete
  std::vector<size_t> pending_dependents_;       // received -> outputs not produced
  std::map<uint32_t, std::pair<uint64_t, std::vector<std::byte>>> held_;
  std::vector<bool> produced_;
  bool begun_ = false;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_TRANSFORMING_SINK_H_
