// The host twin's bookkeeping of "device" memory (kernels/host_twin/README.md),
// shared by its runtime (runtime.cc) and its kernel launchers (launchers.cc).
#ifndef WEIGHTCAST_KERNELS_HOST_TWIN_MEMORY_H_
#define WEIGHTCAST_KERNELS_HOST_TWIN_MEMORY_H_

#include <cstddef>
#include <cstdint>

namespace weightcast::host_twin {

// True when [p, p + n) lies inside one live cudaMalloc allocation.
[[nodiscard]] bool IsDevice(const void* p, size_t n);
// True when a kernel may touch [p, p + n): device memory, or pinned host
// memory (cudaMallocHost, mapped into the device's address space on a GPU).
[[nodiscard]] bool KernelAccessible(const void* p, size_t n);
// Reports a misuse a GPU would refuse or fault on (stderr, naming `call`)
// and records it as the last error; returns cudaErrorInvalidValue's value.
int Misuse(const char* call, const char* why, const void* p = nullptr, size_t n = 0);
// Successful allocations so far (cudaMalloc, cudaMallocHost, cudaHostAlloc):
// a test's check that nothing grows while an update runs.
[[nodiscard]] uint64_t AllocationCount();

}  // namespace weightcast::host_twin

#endif  // WEIGHTCAST_KERNELS_HOST_TWIN_MEMORY_H_
