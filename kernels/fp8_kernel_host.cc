#include "kernels/fp8_kernel_host.h"

#include <vector>

#include "kernels/fp8_kernel.h"

namespace weightcast {

bool RunFp8KernelOnHost(const Fp8QuantizeParams* params, size_t n) {
  // Every quantization is checked before any runs, as the launcher does.
  std::vector<uint64_t> units(n);
  for (size_t i = 0; i < n; ++i) {
    Fp8Bands span;
    if (Fp8BandsOf(params[i], &span) != cudaSuccess) return false;
    units[i] = Fp8UnitsOf(params[i], span);
  }
  // Every thread's registers of one block.
  std::vector<float> values(kFp8Threads * kFp8RowsPerThread * kFp8ColsPerLane);
  using Regs = float[kFp8RowsPerThread][kFp8ColsPerLane];
  auto regs = [&](unsigned t) -> Regs& {
    return *reinterpret_cast<Regs*>(values.data() + t * kFp8RowsPerThread * kFp8ColsPerLane);
  };
  for (size_t i = 0; i < n; ++i) {
    const Fp8QuantizeParams& p = params[i];
    for (uint64_t k = 0; k < units[i]; ++k) {
      const Fp8Unit u = Fp8UnitOf(p, k);
      // The block's amax: a NaN-propagating maximum of non-negative values,
      // which no order of reduction changes (the kernel's shuffles give the
      // same).
      float amax = 0.0f;
      for (unsigned t = 0; t < kFp8Threads; ++t) {
        amax = MaxPropagatingNaN(amax, Fp8LoadThread(p, u, t, regs(t)));
      }
      const float scale = Fp8BlockScale(amax, p.scale_rule, p.power_of_two);
      for (unsigned t = 0; t < kFp8Threads; ++t) Fp8StoreThread(p, u, t, regs(t), scale);
    }
  }
  return true;
}

}  // namespace weightcast
