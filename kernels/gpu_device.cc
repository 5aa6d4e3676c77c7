#include "kernels/gpu_device.h"

#include <cuda_runtime_api.h>

#include "kernels/cuda_check.h"

namespace weightcast {

absl::StatusOr<int> CudaDeviceCount() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  switch (err) {
    case cudaSuccess:
      return count;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorCallRequiresNewerDriver:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorDevicesUnavailable:
      cudaGetLastError();  // clear the sticky-less error so later calls start clean
      return 0;
    default:
      return CudaErrorStatus(err, "cudaGetDeviceCount");
  }
}

}  // namespace weightcast
