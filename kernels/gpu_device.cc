#include "kernels/gpu_device.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_check.h"

namespace weightcast {
namespace {

// Whether a CUDA driver is installed at all (the runtime links it at run
// time, so its absence and its age give the same runtime error).
bool DriverInstalled() {
  void* lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (lib == nullptr) return false;
  dlclose(lib);
  return true;
}

absl::Status Unusable(cudaError_t err) {
  cudaGetLastError();  // leave no error for later calls
  return absl::FailedPreconditionError(absl::StrCat(
      "a CUDA driver is installed but cannot be used: cudaGetDeviceCount: ",
      cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

}  // namespace

absl::StatusOr<int> CudaDeviceCount() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  switch (err) {
    case cudaSuccess:
      return count;
    case cudaErrorNoDevice:
      cudaGetLastError();
      return 0;
    case cudaErrorInsufficientDriver:
      if (!DriverInstalled()) {
        cudaGetLastError();
        return 0;
      }
      return Unusable(err);
    case cudaErrorCallRequiresNewerDriver:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorDevicesUnavailable:
      return Unusable(err);
    default:
      return CudaErrorStatus(err, "cudaGetDeviceCount");
  }
}

int ReportNoGpu(const char* who, const absl::StatusOr<int>& gpus, const char* what) {
  std::printf("%s: no usable CUDA device (%s), %s\n", who,
              gpus.ok() ? "none found" : std::string(gpus.status().message()).c_str(), what);
  return GpuRequired() || !gpus.ok() ? 1 : 0;
}

bool GpuRequired() {
  const char* v = std::getenv("WC_REQUIRE_GPU");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

}  // namespace weightcast
