// Sender-side CUDA IPC sources: the trainer process hands the daemon a
// cudaIpcMemHandle_t (64 bytes) per allocation and each tensor's offset in
// it (python/weightcast/cuda_ipc.py makes them); the daemon maps
// each allocation once and keeps it mapped across updates.
//
//   IpcAllocationCache cache(/*device=*/0);
//   ASSIGN_OR_RETURN(void* p, cache.Resolve("layers.0.w", handle, alloc_bytes,
//                                           offset, tensor_bytes));
//
// An allocation is opened on its first use (cudaIpcOpenMemHandle) and stays
// open while any tensor refers to it. When a tensor is re-registered with a
// different handle (the trainer reallocated it), the tensor moves to the new
// allocation and the old one is closed once no tensor refers to it.
// Not thread-safe: one update thread resolves sources.
#ifndef WEIGHTCAST_KERNELS_CUDA_IPC_H_
#define WEIGHTCAST_KERNELS_CUDA_IPC_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace weightcast {

inline constexpr size_t kCudaIpcHandleBytes = 64;

// How handles are mapped. The CUDA implementation is the default; tests
// substitute a fake to check the cache's bookkeeping without a GPU.
class IpcMapper {
 public:
  virtual ~IpcMapper() = default;
  // Maps the allocation of a 64-byte handle; returns its base address.
  virtual absl::StatusOr<void*> Open(absl::string_view handle) = 0;
  virtual void Close(void* base) = 0;
};

// cudaIpcOpenMemHandle (cudaIpcMemLazyEnablePeerAccess) on `device`.
[[nodiscard]] std::unique_ptr<IpcMapper> NewCudaIpcMapper(int device);

class IpcAllocationCache {
 public:
  explicit IpcAllocationCache(int device);
  explicit IpcAllocationCache(std::unique_ptr<IpcMapper> mapper);
  ~IpcAllocationCache();  // closes every open allocation
  IpcAllocationCache(const IpcAllocationCache&) = delete;
  IpcAllocationCache& operator=(const IpcAllocationCache&) = delete;

  // Device address of bytes [offset, offset + bytes) of the allocation
  // `handle` (exactly 64 bytes) of `allocation_bytes` bytes, for tensor
  // `tensor`. INVALID_ARGUMENT (naming the tensor) for a handle of another
  // length, or a range past allocation_bytes, or an allocation_bytes that
  // differs from what the same handle was opened with; the open's error
  // (INTERNAL) otherwise.
  [[nodiscard]] absl::StatusOr<void*> Resolve(absl::string_view tensor, absl::string_view handle,
                                              uint64_t allocation_bytes, uint64_t offset,
                                              uint64_t bytes);

  // Forgets a tensor; closes its allocation when it was the last user.
  void Release(absl::string_view tensor);
  // Releases every tensor not in `tensors` (those no longer registered).
  void RetainOnly(const absl::flat_hash_set<std::string>& tensors);

  [[nodiscard]] size_t open_allocations() const { return allocations_.size(); }

 private:
  struct Allocation {
    void* base = nullptr;
    uint64_t bytes = 0;
    absl::flat_hash_set<std::string> users;
  };
  void DropUser(const std::string& tensor, const std::string& handle);

  std::unique_ptr<IpcMapper> mapper_;
  absl::flat_hash_map<std::string, Allocation> allocations_;  // by handle bytes
  absl::flat_hash_map<std::string, std::string> tensor_handle_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_CUDA_IPC_H_
