// The CPU packer: executes an OutputTensor's addressing (and FP8) for a byte
// range of the output. It is the CPU path of the sender and the oracle the
// GPU pack kernel is compared with.
#ifndef WEIGHTCAST_KERNELS_PACK_REFERENCE_H_
#define WEIGHTCAST_KERNELS_PACK_REFERENCE_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "common/output_tensor.h"
#include "kernels/finite_guard.h"

namespace weightcast {

// Copies assembled elements [begin, end) of `out` (before quantization, in
// the source dtype) to dst. With a `guard`, every element copied is checked
// as it is copied (the bytes are read once) and non-finite ones recorded
// under their source's number and flat element index.
void GatherElements(const OutputTensor& out, std::span<const HostSource> sources,
                    uint64_t begin, uint64_t end, std::byte* dst,
                    FiniteGuard* guard = nullptr);

// Writes bytes [byte_offset, byte_offset + bytes) of `out` to dst. For
// plain outputs any element-aligned range; for FP8 outputs the range must be
// aligned to out.SplitUnitBytes() (INVALID_ARGUMENT naming the tensor
// otherwise). A `guard` records the non-finite source elements read
// (GatherElements); the bytes are written all the same (see fp8_reference.h
// for what block FP8 makes of them), and the caller decides.
[[nodiscard]] absl::Status PackOutputRange(const OutputTensor& out,
                                           std::span<const HostSource> sources,
                                           uint64_t byte_offset, uint64_t bytes, std::byte* dst,
                                           FiniteGuard* guard = nullptr);

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_PACK_REFERENCE_H_
