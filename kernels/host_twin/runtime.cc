// The CUDA runtime calls the data plane makes, on the host
// (kernels/host_twin/README.md): one pretend device whose memory is host
// memory, streams that run each operation as it is enqueued (a valid
// schedule of any stream program), and the checks a GPU would make:
// device-side addresses must lie inside live allocations, copies must go
// the way their kind says, streams must be live. A violation is reported
// on stderr naming the call and returned as cudaErrorInvalidValue, so a
// host-logic bug (a host pointer where device memory belongs, a copy past
// an allocation) fails the test instead of passing by luck.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "kernels/host_twin/memory.h"

namespace weightcast::host_twin {
namespace {

struct Allocation {
  uintptr_t base = 0;
  size_t bytes = 0;
  bool device = false;  // cudaMalloc; false: cudaMallocHost (pinned)
};

struct State {
  std::mutex mu;
  std::map<uintptr_t, Allocation> allocations;  // by base
  std::set<uintptr_t> streams;
  uintptr_t next_stream = 0x5000;
  cudaError_t last_error = cudaSuccess;
  uint64_t allocations_made = 0;
};

State& S() {
  static State* s = new State;  // never destroyed: used until exit
  return *s;
}

// The live allocation holding all of [p, p + n), or null. Caller holds mu.
const Allocation* Holding(const void* p, size_t n) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = S().allocations.upper_bound(a);
  if (it == S().allocations.begin()) return nullptr;
  const Allocation& al = (--it)->second;
  if (a - al.base >= al.bytes || n > al.bytes - (a - al.base)) return nullptr;
  return &al;
}

bool StreamLive(cudaStream_t s) {
  if (s == nullptr) return true;  // the legacy default stream
  std::lock_guard<std::mutex> lock(S().mu);
  return S().streams.count(reinterpret_cast<uintptr_t>(s)) != 0;
}

cudaError_t Allocate(void** p, size_t bytes, bool device, const char* call) {
  if (p == nullptr) return static_cast<cudaError_t>(Misuse(call, "null result pointer"));
  // Uninitialised, as cudaMalloc leaves it: a pattern, not zeros, so code
  // that forgets to write memory does not read zeros by luck.
  const size_t rounded = (bytes + 255) / 256 * 256;
  void* m = std::aligned_alloc(256, rounded == 0 ? 256 : rounded);
  if (m == nullptr) return cudaErrorMemoryAllocation;
  std::memset(m, 0xCD, bytes);
  std::lock_guard<std::mutex> lock(S().mu);
  S().allocations[reinterpret_cast<uintptr_t>(m)] =
      Allocation{reinterpret_cast<uintptr_t>(m), bytes == 0 ? 1 : bytes, device};
  ++S().allocations_made;
  *p = m;
  return cudaSuccess;
}

cudaError_t Release(void* p, bool device, const char* call) {
  if (p == nullptr) return cudaSuccess;
  bool found = false;
  {
    std::lock_guard<std::mutex> lock(S().mu);
    auto it = S().allocations.find(reinterpret_cast<uintptr_t>(p));
    if (it != S().allocations.end() && it->second.device == device) {
      S().allocations.erase(it);
      found = true;
    }
  }
  if (!found) {
    return static_cast<cudaError_t>(
        Misuse(call, "not the base of a live allocation of this kind", p));
  }
  std::free(p);
  return cudaSuccess;
}

// Whether [p, p + n) is on the side `device` says: inside a cudaMalloc
// allocation, or (host side) not inside one.
bool OnSide(const void* p, size_t n, bool device) {
  return device ? IsDevice(p, n) : !IsDevice(p, 1);
}

cudaError_t Copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t stream,
                 const char* call) {
  if (!StreamLive(stream)) return static_cast<cudaError_t>(Misuse(call, "not a live stream"));
  if (n == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) {
    return static_cast<cudaError_t>(Misuse(call, "null pointer"));
  }
  if (kind != cudaMemcpyDefault) {
    const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    if (!OnSide(src, n, src_device)) {
      return static_cast<cudaError_t>(Misuse(
          call, src_device ? "source is not device memory of that size" : "source is device memory",
          src, n));
    }
    if (!OnSide(dst, n, dst_device)) {
      return static_cast<cudaError_t>(
          Misuse(call,
                 dst_device ? "destination is not device memory of that size"
                            : "destination is device memory",
                 dst, n));
    }
  }
  std::memmove(dst, src, n);
  return cudaSuccess;
}

}  // namespace

bool IsDevice(const void* p, size_t n) {
  std::lock_guard<std::mutex> lock(S().mu);
  const Allocation* a = Holding(p, n == 0 ? 1 : n);
  return a != nullptr && a->device;
}

bool KernelAccessible(const void* p, size_t n) {
  if (n == 0) return true;
  std::lock_guard<std::mutex> lock(S().mu);
  return Holding(p, n) != nullptr;
}

uint64_t AllocationCount() {
  std::lock_guard<std::mutex> lock(S().mu);
  return S().allocations_made;
}

int Misuse(const char* call, const char* why, const void* p, size_t n) {
  std::fprintf(stderr, "host twin: %s: %s (address %p, %zu bytes)\n", call, why, p, n);
  std::lock_guard<std::mutex> lock(S().mu);
  S().last_error = cudaErrorInvalidValue;
  return cudaErrorInvalidValue;
}

}  // namespace weightcast::host_twin

namespace ht = weightcast::host_twin;

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  std::lock_guard<std::mutex> lock(ht::S().mu);
  const cudaError_t e = ht::S().last_error;
  ht::S().last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) {
  std::lock_guard<std::mutex> lock(ht::S().mu);
  return ht::S().last_error;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    default: return "cudaError (host twin)";
  }
}

const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "refused by the host twin (see stderr)";
}

cudaError_t cudaMalloc(void** p, size_t bytes) { return ht::Allocate(p, bytes, true, "cudaMalloc"); }
cudaError_t cudaFree(void* p) { return ht::Release(p, true, "cudaFree"); }
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  return ht::Allocate(p, bytes, false, "cudaMallocHost");
}
cudaError_t cudaFreeHost(void* p) { return ht::Release(p, false, "cudaFreeHost"); }
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned int) {
  return ht::Allocate(p, bytes, false, "cudaHostAlloc");
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  std::lock_guard<std::mutex> lock(ht::S().mu);
  const uintptr_t id = ht::S().next_stream += 0x10;
  ht::S().streams.insert(id);
  *stream = reinterpret_cast<cudaStream_t>(id);
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(ht::S().mu);
  return ht::S().streams.erase(reinterpret_cast<uintptr_t>(stream)) == 0
             ? cudaErrorInvalidResourceHandle
             : cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (!ht::StreamLive(stream)) {
    return static_cast<cudaError_t>(ht::Misuse("cudaStreamSynchronize", "not a live stream"));
  }
  return cudaSuccess;
}

// Every operation ran as it was enqueued: a live stream is always done.
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  if (!ht::StreamLive(stream)) {
    return static_cast<cudaError_t>(ht::Misuse("cudaStreamQuery", "not a live stream"));
  }
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  return ht::Copy(dst, src, n, kind, nullptr, "cudaMemcpy");
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  return ht::Copy(dst, src, n, kind, stream, "cudaMemcpyAsync");
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t stream) {
  if (!ht::StreamLive(stream)) {
    return static_cast<cudaError_t>(ht::Misuse("cudaMemsetAsync", "not a live stream"));
  }
  if (n == 0) return cudaSuccess;
  if (!ht::IsDevice(p, n)) {
    return static_cast<cudaError_t>(ht::Misuse("cudaMemset", "not device memory of that size", p, n));
  }
  std::memset(p, value, n);
  return cudaSuccess;
}

cudaError_t cudaMemset(void* p, int value, size_t n) { return cudaMemsetAsync(p, value, n, nullptr); }

// CUDA IPC has no host twin: another process cannot map this one's memory.
cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t*, void*) { return cudaErrorNotSupported; }
cudaError_t cudaIpcOpenMemHandle(void**, cudaIpcMemHandle_t, unsigned int) {
  return cudaErrorNotSupported;
}
cudaError_t cudaIpcCloseMemHandle(void*) { return cudaErrorNotSupported; }

}  // extern "C"
