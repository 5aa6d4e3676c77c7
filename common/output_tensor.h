// OutputTensor: one tensor as it goes on the wire (or into a receiver's
// output), described as addressing over source tensors plus an optional FP8
// block quantization. This is how every layout transform is expressed
// (expert expansion and fusion, vLLM w13/w2 assembly with TP/EP slicing,
// Llama-4's transposed layout): which source elements go where. The CPU packer
// (kernels/pack_reference.h) and the GPU pack kernel both execute it, so no
// transform makes an intermediate copy.
#ifndef WEIGHTCAST_COMMON_OUTPUT_TENSOR_H_
#define WEIGHTCAST_COMMON_OUTPUT_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/dtype.h"
#include "common/tensor_spec.h"

namespace weightcast {

// A 2-D block of a source tensor. Its elements, in output order, are
//   transpose == false: for r in [0,rows), c in [0,cols):
//                         src[src_offset + r * src_row_stride + c]
//   transpose == true:  for c in [0,cols), r in [0,rows):
//                         src[src_offset + r * src_row_stride + c]
// i.e. with transpose the piece lands as a [cols, rows] matrix.
// Offsets and strides count elements of the source dtype.
struct Piece {
  uint32_t source = 0;          // index into the source list
  uint64_t src_offset = 0;
  uint64_t rows = 0;
  uint64_t cols = 0;
  uint64_t src_row_stride = 0;
  bool transpose = false;

  [[nodiscard]] uint64_t NumElements() const { return rows * cols; }
  friend bool operator==(const Piece&, const Piece&) = default;
};

enum class QuantKind : uint8_t {
  kNone = 0,       // output elements are the source elements, same dtype
  kFp8Weight = 1,  // output = e4m3fn encode of the assembled matrix
  kFp8Scale = 2,   // output = f32 block scales of the assembled matrix
};

// Scale rules for block FP8 (see docs/FORMATS.md).
enum class Fp8ScaleRule : uint8_t {
  kAmaxClamp = 0,   // scale = max(amax, 1e-4) / 448 (vLLM's reference)
  kScaleClamp = 1,  // scale = max(amax / 448, 1e-12) (prime-rl)
};

struct Fp8Options {
  Fp8ScaleRule rule = Fp8ScaleRule::kAmaxClamp;
  bool power_of_two = false;  // UE8M0: scale = 2^ceil(log2(scale))
  friend bool operator==(const Fp8Options&, const Fp8Options&) = default;
};

inline constexpr int64_t kFp8Block = 128;

struct OutputTensor {
  // Name, dtype and shape as the receiver sees them.
  TensorSpec spec;
  // Concatenated in order, the pieces give the unquantized output elements
  // (for kFp8Scale: the matrix whose scales are taken).
  std::vector<Piece> pieces;
  // Dtype of every source the pieces read (all the same).
  DType source_dtype = DType::kF32;
  QuantKind quant = QuantKind::kNone;
  // For kFp8Weight / kFp8Scale: the assembled elements are `q_batch`
  // row-major matrices of [q_rows, q_cols], each quantized in 128x128 blocks.
  uint64_t q_batch = 0;
  uint64_t q_rows = 0;
  uint64_t q_cols = 0;
  Fp8Options fp8;

  // The output may be cut across buckets only at multiples of this many
  // bytes (1 element for plain copies; whole 128-row bands, or whole
  // matrices, for FP8).
  [[nodiscard]] uint64_t SplitUnitBytes() const;
};

// A source tensor in host memory (mapped shm file, mapped safetensors file,
// or a received tensor on the receiver).
struct HostSource {
  TensorSpec spec;
  const std::byte* data = nullptr;
};

// Output that is a plain copy of the whole of source `index`.
[[nodiscard]] OutputTensor CopyOf(const TensorSpec& source, uint32_t index);

// True when `out` is exactly one of `sources`, byte for byte (a plain copy
// of the whole of one source, however its piece is spelled): receivers pass
// such outputs through segment by segment instead of assembling them.
[[nodiscard]] bool IsWholeCopy(const OutputTensor& out, std::span<const TensorSpec> sources);

// Checks that the pieces stay inside their sources, have one source dtype,
// that the element count matches spec, and the FP8 fields are coherent.
// INVALID_ARGUMENT naming the output tensor.
[[nodiscard]] absl::Status ValidateOutputTensor(const OutputTensor& out,
                                                std::span<const TensorSpec> sources);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_OUTPUT_TENSOR_H_
