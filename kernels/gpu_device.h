// GPU presence: how tests and the daemon decide whether a CUDA device is there.
#ifndef WEIGHTCAST_KERNELS_GPU_DEVICE_H_
#define WEIGHTCAST_KERNELS_GPU_DEVICE_H_

#include "absl/status/statusor.h"

namespace weightcast {

// Number of CUDA devices. 0 (not an error) when this machine has no GPU:
// no CUDA driver (libcuda.so.1 does not load) or a driver that finds no
// device. A driver that is there but cannot be used (older than this
// runtime, out of step with its kernel module, devices unavailable) is
// FAILED_PRECONDITION naming the CUDA error: a GPU machine that cannot run
// the GPU code must not pass for one without a GPU. Thread-safe.
[[nodiscard]] absl::StatusOr<int> CudaDeviceCount();

// True when $WC_REQUIRE_GPU is "1" (scripts/gpu-run sets it): a GPU test
// that would skip for want of a GPU fails instead.
[[nodiscard]] bool GpuRequired();

// For a benchmark that found no usable GPU (`gpus` is 0 or an error): prints
// "WHO: no usable CUDA device (why), WHAT" and returns its exit code, 1 when
// WC_REQUIRE_GPU=1 or the driver is unusable, else 0.
[[nodiscard]] int ReportNoGpu(const char* who, const absl::StatusOr<int>& gpus, const char* what);

}  // namespace weightcast

// In a gtest body: skip unless a CUDA device is present (fail instead under
// WC_REQUIRE_GPU=1, or when the driver is there but unusable).
#define WC_SKIP_WITHOUT_GPU()                                                         \
  do {                                                                                \
    const absl::StatusOr<int> wc_gpus_ = ::weightcast::CudaDeviceCount();             \
    ASSERT_TRUE(wc_gpus_.ok()) << wc_gpus_.status();                                  \
    if (*wc_gpus_ == 0) {                                                             \
      if (::weightcast::GpuRequired()) {                                              \
        FAIL() << "no CUDA device on this machine, and WC_REQUIRE_GPU=1 requires one"; \
      }                                                                               \
      GTEST_SKIP() << "no CUDA device on this machine";                               \
    }                                                                                 \
  } while (0)

#endif  // WEIGHTCAST_KERNELS_GPU_DEVICE_H_
