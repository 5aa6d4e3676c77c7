// The project's one set of CUDA runtime / NCCL error-check macros.
//
// Host code returns errors as absl::Status (INTERNAL for CUDA failures,
// UNAVAILABLE for NCCL system/remote errors); .cu launchers, which must not
// depend on abseil (nvcc compiles them), return a cudaError_t instead.
//
//   RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(...), "copying bucket ", k);
//   RETURN_IF_NCCL_ERROR(ncclGroupEnd(), "rank ", rank);
//   WC_CUDA_RETURN(cudaGetLastError());   // inside a launcher returning cudaError_t
#ifndef WEIGHTCAST_KERNELS_CUDA_CHECK_H_
#define WEIGHTCAST_KERNELS_CUDA_CHECK_H_

#include <cuda_runtime_api.h>

// For launchers (nvcc and g++): propagate a cudaError_t.
#define WC_CUDA_RETURN(expr)                       \
  do {                                             \
    const cudaError_t wc_cuda_err_ = (expr);       \
    if (wc_cuda_err_ != cudaSuccess) return wc_cuda_err_; \
  } while (0)

#if !defined(__CUDACC__)
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace weightcast {

// INTERNAL status naming the CUDA error and what was being done.
template <typename... Args>
absl::Status CudaErrorStatus(cudaError_t err, const char* expr, const Args&... what) {
  return absl::InternalError(absl::StrCat("CUDA error ", cudaGetErrorName(err), " (",
                                          cudaGetErrorString(err), ") in ", expr,
                                          sizeof...(what) ? ": " : "", what...));
}

}  // namespace weightcast

#define RETURN_IF_CUDA_ERROR(expr, ...)                                            \
  do {                                                                             \
    const cudaError_t wc_cuda_err_ = (expr);                                       \
    if (wc_cuda_err_ != cudaSuccess)                                               \
      return ::weightcast::CudaErrorStatus(wc_cuda_err_, #expr, ##__VA_ARGS__);    \
  } while (0)

// NCCL: only when nccl.h was included before this header.
#if defined(NCCL_MAJOR)
namespace weightcast {

// ncclSystemError / ncclRemoteError mean a peer or the network failed:
// UNAVAILABLE, a caller re-forms the group. Anything else is INTERNAL.
template <typename... Args>
absl::Status NcclErrorStatus(ncclResult_t res, const char* expr, const Args&... what) {
  const std::string msg = absl::StrCat("NCCL error ", ncclGetErrorString(res), " in ", expr,
                                       sizeof...(what) ? ": " : "", what...);
  if (res == ncclSystemError || res == ncclRemoteError) return absl::UnavailableError(msg);
  if (res == ncclInvalidArgument || res == ncclInvalidUsage) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

}  // namespace weightcast

#define RETURN_IF_NCCL_ERROR(expr, ...)                                           \
  do {                                                                            \
    const ncclResult_t wc_nccl_res_ = (expr);                                     \
    if (wc_nccl_res_ != ncclSuccess && wc_nccl_res_ != ncclInProgress)            \
      return ::weightcast::NcclErrorStatus(wc_nccl_res_, #expr, ##__VA_ARGS__);   \
  } while (0)
#endif  // NCCL_MAJOR

#endif  // !__CUDACC__

#endif  // WEIGHTCAST_KERNELS_CUDA_CHECK_H_
