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

namespace weightcast {

// Copies assembled elements [begin, end) of `out` (before quantization, in
// the source dtype) to dst.
void GatherElements(const OutputTensor& out, std::span<const HostSource> sources,
                    uint64_t begin, uint64_t end, std::byte* dst);

// Writes bytes [byte_offset, byte_offset + bytes) of `out` to dst. For
// plain outputs any element-aligned range; for FP8 outputs the range must be
// aligned to out.SplitUnitBytes() (INVALID_ARGUMENT naming the tensor
// otherwise).
[[nodiscard]] absl::Status PackOutputRange(const OutputTensor& out,
                                           std::span<const HostSource> sources,
                                           uint64_t byte_offset, uint64_t bytes, std::byte* dst);

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_PACK_REFERENCE_H_
