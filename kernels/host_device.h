// Macros for code compiled by both nvcc (as __host__ __device__) and g++,
// so the kernels' arithmetic can be tested on machines without a GPU.
#ifndef WEIGHTCAST_KERNELS_HOST_DEVICE_H_
#define WEIGHTCAST_KERNELS_HOST_DEVICE_H_

#if defined(__CUDACC__)
#define WC_HOST_DEVICE __host__ __device__
#define WC_FORCE_INLINE __forceinline__
#define WC_NOINLINE __noinline__
#define WC_UNROLL _Pragma("unroll")
#else
#define WC_HOST_DEVICE
#define WC_FORCE_INLINE inline __attribute__((always_inline))
#define WC_NOINLINE __attribute__((noinline))
#define WC_UNROLL _Pragma("GCC unroll 8")
#endif

#include <cstdint>

namespace weightcast {

// The run holding item `k` of runs whose running item counts are
// run_end[0..n) (n > 0, k < run_end[n - 1]): how a block of a batched kernel
// finds its entry (copy-table tiles, FP8 blocks) by binary search.
WC_HOST_DEVICE inline uint32_t IndexOfRun(const uint64_t* run_end, uint32_t n, uint64_t k) {
  uint32_t lo = 0, hi = n - 1;
  while (lo < hi) {
    const uint32_t mid = (lo + hi) / 2;
    if (run_end[mid] > k) hi = mid; else lo = mid + 1;
  }
  return lo;
}

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_HOST_DEVICE_H_
