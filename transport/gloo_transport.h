// GlooTransport: the CPU data plane. gloo's TCP pairs between every two
// ranks (full mesh over the group rendezvous), host memory.
//
// Connect() sets SIGPIPE to be ignored process-wide: gloo writes to sockets
// without MSG_NOSIGNAL, and a dead peer must fail a write, not kill us.
//
// Broadcast is one-to-all from the root over gloo unbound buffers (what
// gloo's own broadcast does), waited on with deadlines; Abort() wakes a
// blocked wait at once (gloo's abortWaitRecv/abortWaitSend) and closes the
// connections, so the peers fail fast instead of at their deadlines.
#ifndef WEIGHTCAST_TRANSPORT_GLOO_TRANSPORT_H_
#define WEIGHTCAST_TRANSPORT_GLOO_TRANSPORT_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "transport/rendezvous.h"
#include "transport/transport.h"

#include <gloo/transport/unbound_buffer.h>

namespace gloo {
class Context;
}  // namespace gloo

namespace weightcast {

struct GlooOptions {
  RendezvousClient* rendezvous = nullptr;  // must outlive Connect
  std::string key_prefix;                  // the group generation, e.g. "g3/"
  int rank = 0;
  int world_size = 0;
  std::string bind_host = "127.0.0.1";
  absl::Time deadline = absl::InfiniteFuture();
};

class GlooTransport final : public Transport {
 public:
  // Connects the full mesh; DEADLINE_EXCEEDED / UNAVAILABLE naming the ranks
  // that did not show up.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<GlooTransport>> Connect(
      const GlooOptions& options);
  ~GlooTransport() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  bool IsDeviceMemory() const override { return false; }
  absl::Status Broadcast(void* data, size_t bytes, int root, absl::Time deadline) override;
  absl::StatusOr<int64_t> AllReduceMin(int64_t value, absl::Time deadline) override;
  bool SupportsPartialBroadcast() const override { return true; }
  absl::Status BroadcastToRanks(void* data, size_t bytes, int root, int first_receiver,
                                uint64_t tag, absl::Time deadline) override;
  void Abort() override;
  bool healthy() const override { return healthy_ && !aborted_; }

 private:
  GlooTransport(std::shared_ptr<gloo::Context> ctx, int rank, int world)
      : context_(std::move(ctx)), rank_(rank), world_size_(world) {}
  // Sends `buf` to `to` ranks / receives it from `from`, waiting until the
  // deadline; the error names `what`.
  absl::Status Exchange(std::unique_ptr<gloo::transport::UnboundBuffer> buf,
                        const std::vector<int>& to, int from,
                        uint64_t slot, absl::Time deadline, const std::string& what);
  absl::Status Fail(absl::Status s);

  std::shared_ptr<gloo::Context> context_;
  int rank_;
  int world_size_;
  uint64_t next_slot_ = 1;
  std::atomic<bool> healthy_{true};
  std::atomic<bool> aborted_{false};
  std::mutex mu_;  // guards active_ and graveyard_
  gloo::transport::UnboundBuffer* active_ = nullptr;
  // Buffers of failed operations: pairs may still point at them until the
  // context is destroyed, so they outlive it.
  std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> graveyard_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_TRANSPORT_GLOO_TRANSPORT_H_
