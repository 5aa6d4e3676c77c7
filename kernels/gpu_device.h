// GPU presence: how tests and the daemon decide whether a CUDA device is there.
#ifndef WEIGHTCAST_KERNELS_GPU_DEVICE_H_
#define WEIGHTCAST_KERNELS_GPU_DEVICE_H_

#include "absl/status/statusor.h"

namespace weightcast {

// Number of CUDA devices. Returns 0 (not an error) when there is no device or
// no (or a too old) driver, so GPU tests can GTEST_SKIP() on machines without
// one; other runtime failures are INTERNAL. Thread-safe.
[[nodiscard]] absl::StatusOr<int> CudaDeviceCount();

}  // namespace weightcast

// In a gtest body: skip unless a CUDA device is present.
#define WC_SKIP_WITHOUT_GPU()                                                 \
  do {                                                                        \
    const absl::StatusOr<int> wc_gpus_ = ::weightcast::CudaDeviceCount();     \
    ASSERT_TRUE(wc_gpus_.ok()) << wc_gpus_.status();                          \
    if (*wc_gpus_ == 0) GTEST_SKIP() << "no CUDA device on this machine";     \
  } while (0)

#endif  // WEIGHTCAST_KERNELS_GPU_DEVICE_H_
