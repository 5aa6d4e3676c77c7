#include "kernels/cuda_ipc.h"

#include <vector>

#include <cuda_runtime_api.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_check.h"

namespace weightcast {
namespace {

class CudaIpcMapper final : public IpcMapper {
 public:
  explicit CudaIpcMapper(int device) : device_(device) {}

  absl::StatusOr<void*> Open(absl::string_view handle) override {
    static_assert(sizeof(cudaIpcMemHandle_t) == kCudaIpcHandleBytes);
    cudaIpcMemHandle_t h;
    std::memcpy(&h, handle.data(), kCudaIpcHandleBytes);
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    void* base = nullptr;
    RETURN_IF_CUDA_ERROR(cudaIpcOpenMemHandle(&base, h, cudaIpcMemLazyEnablePeerAccess),
                         "device ", device_);
    return base;
  }

  void Close(void* base) override {
    cudaSetDevice(device_);
    cudaIpcCloseMemHandle(base);
  }

 private:
  const int device_;
};

}  // namespace

std::unique_ptr<IpcMapper> NewCudaIpcMapper(int device) {
  return std::make_unique<CudaIpcMapper>(device);
}

IpcAllocationCache::IpcAllocationCache(int device) : mapper_(NewCudaIpcMapper(device)) {}

IpcAllocationCache::IpcAllocationCache(std::unique_ptr<IpcMapper> mapper)
    : mapper_(std::move(mapper)) {}

IpcAllocationCache::~IpcAllocationCache() {
  for (auto& [handle, a] : allocations_) mapper_->Close(a.base);
}

absl::StatusOr<void*> IpcAllocationCache::Resolve(absl::string_view tensor,
                                                  absl::string_view handle,
                                                  uint64_t allocation_bytes, uint64_t offset,
                                                  uint64_t bytes) {
  if (handle.size() != kCudaIpcHandleBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor, "': CUDA IPC handle of ",
                                                   handle.size(), " bytes, expected ",
                                                   kCudaIpcHandleBytes));
  }
  if (offset > allocation_bytes || bytes > allocation_bytes - offset) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor, "': bytes [", offset,
                                                   ", +", bytes, ") outside its allocation of ",
                                                   allocation_bytes, " bytes"));
  }
  const std::string name(tensor);
  const std::string key(handle);
  auto it = allocations_.find(key);
  if (it != allocations_.end() && it->second.bytes != allocation_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", tensor, "': allocation size ", allocation_bytes, " differs from the ",
        it->second.bytes, " bytes it was opened with"));
  }
  if (it == allocations_.end()) {
    absl::StatusOr<void*> base = mapper_->Open(handle);
    if (!base.ok()) {
      return absl::Status(base.status().code(),
                          absl::StrCat("tensor '", tensor, "': ", base.status().message()));
    }
    it = allocations_.emplace(key, Allocation{*base, allocation_bytes, {}}).first;
  }
  // Re-registration under a new handle releases the old allocation.
  auto prev = tensor_handle_.find(name);
  if (prev != tensor_handle_.end() && prev->second != key) {
    const std::string old = prev->second;
    DropUser(name, old);
  }
  it = allocations_.find(key);
  it->second.users.insert(name);
  tensor_handle_[name] = key;
  return static_cast<void*>(static_cast<char*>(it->second.base) + offset);
}

void IpcAllocationCache::Release(absl::string_view tensor) {
  const std::string name(tensor);
  auto it = tensor_handle_.find(name);
  if (it == tensor_handle_.end()) return;
  const std::string handle = it->second;
  DropUser(name, handle);
  tensor_handle_.erase(name);
}

void IpcAllocationCache::RetainOnly(const absl::flat_hash_set<std::string>& tensors) {
  std::vector<std::string> gone;
  for (const auto& [name, handle] : tensor_handle_) {
    if (!tensors.contains(name)) gone.push_back(name);
  }
  for (const std::string& name : gone) Release(name);
}

void IpcAllocationCache::DropUser(const std::string& tensor, const std::string& handle) {
  auto a = allocations_.find(handle);
  if (a == allocations_.end()) return;
  a->second.users.erase(tensor);
  if (a->second.users.empty()) {
    mapper_->Close(a->second.base);
    allocations_.erase(a);
  }
}

}  // namespace weightcast
