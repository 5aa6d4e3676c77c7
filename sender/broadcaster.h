// Broadcaster: the core of one weightcastd sidecar (sender rank i of the
// group). The gRPC service (sender/broadcaster_service.h) is a thin adapter
// over it; tests drive it directly.
//
// States: uninitialized -> (Init) idle <-> (Update) updating; Abort returns
// to uninitialized from anywhere, keeping the registered tensors.
// Threading: every method is thread-safe. Update runs on the caller's
// thread; a second concurrent Update is FAILED_PRECONDITION; Abort and
// GetStatus may be called while an update runs.
#ifndef WEIGHTCAST_SENDER_BROADCASTER_H_
#define WEIGHTCAST_SENDER_BROADCASTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "formats/format_spec.h"
#include "protocol/group.h"
#include "sender/tensor_registry.h"
#include "sender/update_events.h"

namespace weightcast {

class BucketPacker;
class IpcAllocationCache;
class RendezvousServer;
class RendezvousKeyValueStore;


inline constexpr uint64_t kDefaultBucketBytes = uint64_t{64} << 20;
inline constexpr double kDefaultTimeoutSeconds = 120;

struct BroadcasterConfig {
  std::string host = "127.0.0.1";  // rendezvous address (sender 0 serves it)
  uint32_t port = 0;
  uint32_t sender_rank = 0;
  uint32_t num_senders = 1;
  uint32_t rank_offset = 0;        // 0: num_senders
  uint32_t inference_world_size = 0;
  double timeout_s = 0;            // 0: kDefaultTimeoutSeconds
  std::string transport = "gloo";
  FormatOptionsText format;
  uint64_t bucket_bytes = 0;       // 0: kDefaultBucketBytes
  std::string token;
  std::string data_host = "127.0.0.1";
  int cuda_device = 0;             // nccl: staging buffers, kernels, CUDA IPC sources
  // Let NaN / +-inf source values through (off: such a version is refused,
  // naming the tensor; kernels/finite_guard.h).
  bool allow_non_finite = false;

  friend bool operator==(const BroadcasterConfig&, const BroadcasterConfig&) = default;
};

struct BroadcasterStatus {
  std::string state;
  uint64_t last_committed_version = 0;
  std::string last_error;
  uint64_t updates_committed = 0;
  uint64_t updates_failed = 0;
  uint64_t bytes_sent = 0;
  uint32_t registered_tensors = 0;
  uint32_t rank = 0;
  uint32_t world_size = 0;
  uint64_t generation = 0;
  // The last update failed because a peer was lost, stopped or timed out
  // (UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED) and none has committed since;
  // cleared by a commit or a new Init. Health reports NOT_SERVING then.
  bool group_broken = false;
  // The version each receiver rank last reported publishing (0: none yet).
  std::vector<RankVersion> receivers;
  // The GPU data plane's own memory in this process (kernels/device_memory.h):
  // device bytes now and at the peak, and the pinned host bytes' peak.
  uint64_t device_memory_bytes = 0;
  uint64_t device_memory_peak_bytes = 0;
  uint64_t pinned_memory_peak_bytes = 0;
};

// What Init checks before touching anything: INVALID_ARGUMENT naming the
// field. Exposed for the init-config fuzzer (fuzz/).
[[nodiscard]] absl::Status ValidateBroadcasterConfig(const BroadcasterConfig& config);

// Why a daemon in `status` should not be sent work (health NOT_SERVING):
// uninitialised, or its group broken; empty when it is serving.
[[nodiscard]] std::string NotServingReason(const BroadcasterStatus& status);

// What an observer of updates (metrics, logs: ops/) is told with each event.
struct UpdateContext {
  uint64_t version = 0;
  uint32_t sender_rank = 0;
  absl::Time started;  // when Update was called
};
// Called on the update thread, after the caller's sink, sometimes with the
// core's lock held: it must not call back into the Broadcaster.
using UpdateObserver = std::function<void(const UpdateContext&, const UpdateEvent&)>;

class Broadcaster {
 public:
  Broadcaster();
  ~Broadcaster();

  // Validates and applies `config` (INVALID_ARGUMENT naming the field). The
  // same config again: OK, nothing changes. Another config while
  // initialized: FAILED_PRECONDITION. On sender rank 0 this starts the
  // group rendezvous on host:port; returns (rank, world size).
  [[nodiscard]] absl::StatusOr<std::pair<uint32_t, uint32_t>> Init(const BroadcasterConfig& config);

  // See TensorRegistry. Allowed in any state but while updating. Every
  // file passes `may_read` (whether the caller may read it) first.
  [[nodiscard]] absl::Status Register(const std::vector<TensorRegistration>& tensors,
                                      const std::string& checkpoint_dir, bool replace,
                                      const std::string& config_json = "",
                                      const ReadCheck& may_read = nullptr);
  [[nodiscard]] std::pair<uint32_t, uint64_t> RegisteredCount() const;

  // Runs the update of `version` to its end, emitting events; the last one
  // is Committed or Failed. Returns the same outcome. FAILED_PRECONDITION
  // before Init, while another update runs, or when `version` is not greater
  // than the last committed one.
  // `new_model` (read on sender 0): this version may hold another tensor
  // set than the committed model's; receivers take it as the new model.
  [[nodiscard]] absl::Status Update(uint64_t version, const UpdateEventSink& on_event,
                                    bool new_model = false);

  [[nodiscard]] BroadcasterStatus GetStatus() const;

  // Every later update's events also go to `observer` (one at a time).
  void SetObserver(UpdateObserver observer);

  // Cancels a running update (it fails with ABORTED) and returns to
  // uninitialized. Returns whether an update was running.
  bool Abort();

  // Port the rendezvous listens on (sender 0 after Init), for tests that
  // ask for port 0.
  [[nodiscard]] uint32_t rendezvous_port() const;

 private:
  // What an update's data plane uses beyond the transport.
  struct DataPlane {
    BucketPacker* packer = nullptr;  // null: the CPU packer
    std::vector<uint8_t> on_device;  // per source
  };
  // For nccl: the GPU packer, and the CUDA IPC sources opened (their
  // addresses written into `snap`). For gloo: refuses sources in GPU memory.
  absl::StatusOr<DataPlane> PrepareDataPlane(const BroadcasterConfig& config,
                                             RegistrySnapshot& snap);
  void Teardown() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  bool initialized_ ABSL_GUARDED_BY(mu_) = false;
  bool updating_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t updating_version_ ABSL_GUARDED_BY(mu_) = 0;
  BroadcasterConfig config_ ABSL_GUARDED_BY(mu_);
  FormatSpec format_ ABSL_GUARDED_BY(mu_);
  TensorRegistry registry_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<RendezvousServer> server_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<RendezvousKeyValueStore> store_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<GroupMember> member_ ABSL_GUARDED_BY(mu_);
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;
  // The coordinator incarnation last_seq_ counts in: a restarted sender 0
  // numbers its announcements from 1 again.
  std::string incarnation_ ABSL_GUARDED_BY(mu_);
  BroadcasterStatus stats_ ABSL_GUARDED_BY(mu_);
  UpdateObserver observer_ ABSL_GUARDED_BY(mu_);
  // Used only by the thread running an update (updating_ makes it the only
  // one), so not under mu_: opening IPC handles must not block GetStatus.
  std::unique_ptr<BucketPacker> gpu_packer_;
  int gpu_device_ = -1;
  std::unique_ptr<IpcAllocationCache> ipc_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SENDER_BROADCASTER_H_
