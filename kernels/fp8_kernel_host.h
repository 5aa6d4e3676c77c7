// The block FP8 kernel run on the CPU: the GPU kernel's own thread code
// (kernels/fp8_kernel.h) executed block by block and thread by thread, for
// the host twin's LaunchFp8Quantize and for fp8_kernel_test, which compares
// it with the CPU reference (kernels/fp8_reference.h) on machines without a
// GPU.
#ifndef WEIGHTCAST_KERNELS_FP8_KERNEL_HOST_H_
#define WEIGHTCAST_KERNELS_FP8_KERNEL_HOST_H_

#include <cstddef>

#include "kernels/fp8_cuda.h"

namespace weightcast {

// Executes the quantizations params[0..n) as LaunchFp8Quantize's kernel
// does, with host addresses (segments included). False, having done
// nothing, for parameters LaunchFp8Quantize refuses (Fp8BandsOf).
[[nodiscard]] bool RunFp8KernelOnHost(const Fp8QuantizeParams* params, size_t n);

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_FP8_KERNEL_HOST_H_
