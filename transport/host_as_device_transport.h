// HostAsDeviceTransport (tests, and nccl groups on the host twin,
// kernels/host_twin): another transport that says it moves
// device memory. It lets the CPU run the code paths a device transport
// (NCCL) takes, over gloo: whatever asks IsDeviceMemory() takes its device
// branch, while the bytes stay in host memory. It counts which calls were
// made, so a test can check that control messages go through BroadcastHost.
#ifndef WEIGHTCAST_TRANSPORT_HOST_AS_DEVICE_TRANSPORT_H_
#define WEIGHTCAST_TRANSPORT_HOST_AS_DEVICE_TRANSPORT_H_

#include <atomic>
#include <memory>

#include "transport/transport.h"

namespace weightcast {

class HostAsDeviceTransport final : public Transport {
 public:
  explicit HostAsDeviceTransport(std::unique_ptr<Transport> inner) : inner_(std::move(inner)) {}

  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  bool IsDeviceMemory() const override { return true; }
  absl::Status Broadcast(void* data, size_t bytes, int root, absl::Time deadline) override {
    ++device_broadcasts;
    return inner_->Broadcast(data, bytes, root, deadline);
  }
  absl::Status BroadcastHost(void* data, size_t bytes, int root, absl::Time deadline) override {
    ++host_broadcasts;
    return inner_->BroadcastHost(data, bytes, root, deadline);
  }
  bool SupportsPartialBroadcast() const override { return inner_->SupportsPartialBroadcast(); }
  absl::Status BroadcastToRanks(void* data, size_t bytes, int root, int first_receiver,
                                uint64_t tag, absl::Time deadline) override {
    ++device_broadcasts;
    return inner_->BroadcastToRanks(data, bytes, root, first_receiver, tag, deadline);
  }
  absl::StatusOr<int64_t> AllReduceMin(int64_t value, absl::Time deadline) override {
    return inner_->AllReduceMin(value, deadline);
  }
  void Abort() override { inner_->Abort(); }
  bool healthy() const override { return inner_->healthy(); }

  std::atomic<int> device_broadcasts{0};  // Broadcast and BroadcastToRanks
  std::atomic<int> host_broadcasts{0};    // BroadcastHost

 private:
  std::unique_ptr<Transport> inner_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_TRANSPORT_HOST_AS_DEVICE_TRANSPORT_H_
