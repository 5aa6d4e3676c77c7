// DeviceParameterSink: copies each received tensor straight into the
// inference engine's parameters on the GPU (device to device, from the
// verified landing slot; nothing goes through the host; with gloo, host to
// device from the received bucket), given as a name -> (device pointer,
// bytes) map. One stream synchronisation per bucket, none per tensor. Targets may live in this process or
// be opened from a worker's CUDA IPC handles (kernels/cuda_ipc.h).
//
// Two modes, because "all of a version or none of it" costs memory:
// - kStaged: each target gets a device shadow at Begin; segments go to the
//   shadows and Commit copies every shadow into its parameter. Nothing of an
//   aborted version reaches a parameter. Memory: one more copy of the
//   targets.
// - kInPlace: segments go into the parameters as they arrive. The engine
//   must hold off serving between its own begin and finalize (the reload
//   bracket of docs/FORMATS.md); after Abort, dirty() says whether any
//   parameter was written, and the engine must reload before serving.
// Every tensor of the version must have a target of exactly its size, and
// every target must be written by the version (else Begin or Commit fails,
// naming the tensor).
#ifndef WEIGHTCAST_RECEIVER_DEVICE_PARAMETER_SINK_H_
#define WEIGHTCAST_RECEIVER_DEVICE_PARAMETER_SINK_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "kernels/cuda_buffer.h"
#include "receiver/sink.h"

namespace weightcast {

struct DeviceTarget {
  void* data = nullptr;  // device memory on the sink's device
  uint64_t bytes = 0;
};

class DeviceParameterSink final : public Sink {
 public:
  enum class Mode { kStaged, kInPlace };

  DeviceParameterSink(int device, absl::flat_hash_map<std::string, DeviceTarget> targets,
                      Mode mode);

  bool TakesDeviceMemory() const override { return true; }
  void SetWriteDevice(int device) override { write_device_ = device; }
  absl::Status Begin(const GlobalManifest& manifest) override;
  // Queues the copy on the sink's stream; EndBucket waits for the bucket's.
  absl::Status Write(uint32_t tensor, uint64_t offset, const std::byte* data,
                     uint64_t bytes) override;
  absl::Status EndBucket() override;
  absl::StatusOr<std::string> Commit() override;
  void Abort() override;

  // kInPlace: whether an aborted version wrote into any parameter since the
  // last committed one (the parameters then hold a mix until a commit).
  [[nodiscard]] bool dirty() const { return dirty_; }

 private:
  absl::Status EnsureStream();

  const int device_;
  const absl::flat_hash_map<std::string, DeviceTarget> targets_;
  const Mode mode_;
  int write_device_ = -1;  // where Write's data lives: -1 host (gloo)
  const GlobalManifest* manifest_ = nullptr;
  std::vector<const DeviceTarget*> by_tensor_;  // manifest index -> target
  std::vector<uint64_t> written_;               // bytes per manifest tensor
  std::vector<DeviceBuffer> shadows_;           // kStaged, per manifest tensor
  bool dirty_ = false;
  // Made at the first Begin; last, so its copies end before shadows are freed.
  std::optional<CudaStream> stream_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_DEVICE_PARAMETER_SINK_H_
