// TensorRegistry: the tensors a sender owns and where their bytes live.
//
// Registration validates everything before keeping anything (one bad
// descriptor rejects the whole call, naming the tensor). Registering a name
// again replaces its location (the trainer reallocated). Bytes are read in
// place at update time: shared-memory files and safetensors files are
// mapped (MAP_SHARED), so a trainer that rewrites its file between updates
// is seen without re-registering.
// Threading: externally synchronized (the Broadcaster holds its lock).
#ifndef WEIGHTCAST_SENDER_TENSOR_REGISTRY_H_
#define WEIGHTCAST_SENDER_TENSOR_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"
#include "common/output_tensor.h"
#include "common/tensor_spec.h"

namespace weightcast {

struct ShmLocation {
  std::string path;
  uint64_t offset = 0;
};

struct CudaIpcLocation {
  std::string ipc_handle;  // 64 bytes
  uint64_t offset = 0;
  int device = 0;
  uint64_t allocation_bytes = 0;
};

struct TensorRegistration {
  TensorSpec spec;
  std::variant<ShmLocation, CudaIpcLocation> location;
};

// A source in the trainer's GPU memory, resolved by the caller (through an
// IpcAllocationCache) into sources[index].data.
struct DeviceSourceRef {
  size_t index = 0;
  CudaIpcLocation location;
};

// What one update reads: sources in registration order, kept mapped while
// the snapshot lives. Sources listed in device_sources have no address yet
// (data == nullptr).
struct RegistrySnapshot {
  std::vector<HostSource> sources;
  std::vector<DeviceSourceRef> device_sources;
  std::vector<std::shared_ptr<MappedFile>> files;
  std::string config_json;
};

// Whether the caller that registers a file may read it (access/peer.h):
// given the path and the (device, inode) the daemon mapped. Null: no check.
using ReadCheck =
    std::function<absl::Status(const std::string& path, uint64_t device, uint64_t inode)>;

class TensorRegistry {
 public:
  // Adds (or, with `replace`, replaces all with) `tensors`.
  // INVALID_ARGUMENT naming the tensor: invalid spec, duplicate name in the
  // request, missing file, range outside the file or the CUDA allocation, a
  // CUDA IPC handle that is not 64 bytes. CUDA IPC handles are opened at
  // update time, on the transport's GPU. Every file mapped is first passed
  // to `may_read` (its refusal, named by tensor, rejects the call).
  [[nodiscard]] absl::Status Add(const std::vector<TensorRegistration>& tensors, bool replace,
                                 const ReadCheck& may_read = nullptr);

  // Registers every tensor of a safetensors checkpoint directory (and its
  // config.json). Same rules as Add; config.json too passes `may_read`.
  [[nodiscard]] absl::Status AddCheckpointDir(const std::string& dir, bool replace,
                                              const ReadCheck& may_read = nullptr);

  // Sets the config.json that travels with updates. INVALID_ARGUMENT unless
  // it is a JSON object.
  [[nodiscard]] absl::Status SetConfigJson(const std::string& json);

  [[nodiscard]] size_t size() const { return entries_.size(); }
  [[nodiscard]] uint64_t total_bytes() const;

  // Checks every file still covers its tensors (FAILED_PRECONDITION naming
  // the tensor if a file shrank) and returns the sources.
  [[nodiscard]] absl::StatusOr<RegistrySnapshot> Snapshot() const;

 private:
  struct Entry {
    TensorSpec spec;
    std::shared_ptr<MappedFile> file;  // null for CUDA IPC
    uint64_t offset = 0;
    std::optional<CudaIpcLocation> ipc;
  };
  std::vector<Entry> entries_;
  std::string config_json_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SENDER_TENSOR_REGISTRY_H_
