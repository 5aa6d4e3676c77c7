// From an FP8 OutputTensor (kFp8Weight or kFp8Scale) and a byte range of it
// placed in a bucket to the parameters of LaunchFp8Quantize: the row
// segments of the assembled matrix and the row range. Plain C++, tested
// without a GPU.
#ifndef WEIGHTCAST_KERNELS_FP8_SEGMENTS_H_
#define WEIGHTCAST_KERNELS_FP8_SEGMENTS_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "common/output_tensor.h"
#include "kernels/fp8_cuda.h"

namespace weightcast {

struct Fp8Launch {
  std::vector<Fp8RowSegment> segments;  // upload to the device, then point params at them
  Fp8QuantizeParams params;             // everything but params.segments
};

// Fills `launch` for bytes [byte_offset, byte_offset + bytes) of `out` written
// to `bucket + bucket_offset` (the range follows PackOutputRange's rules:
// aligned to out.SplitUnitBytes()). `source_addrs[i]` is source i's element 0.
// `guard_slots[i]`, when given, is the non-finite guard word of source i
// (every segment gets guard_base = source_addrs[i] and that slot; the caller
// points params.guard at the words). UNIMPLEMENTED when a piece is
// transposed or does not span whole rows of the q_cols-wide matrix (no model
// family needs that yet: Llama-4's transposed experts are not quantized by
// this path); INVALID_ARGUMENT for bad ranges or sources, naming the tensor.
[[nodiscard]] absl::Status BuildFp8Launch(const OutputTensor& out, uint64_t byte_offset,
                                          uint64_t bytes, std::span<const uint64_t> source_addrs,
                                          uint64_t bucket, uint64_t bucket_offset,
                                          Fp8Launch* launch,
                                          std::span<const uint32_t> guard_slots = {});

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_FP8_SEGMENTS_H_
