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

#endif  // WEIGHTCAST_KERNELS_HOST_DEVICE_H_
