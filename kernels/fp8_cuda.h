// Block FP8 (e4m3fn, 128x128 blocks) on the GPU: quantization straight from
// the source tensors into a bucket, and decoding. Bit-exact twin of
// kernels/fp8_reference.h (same scale rules, same encode, true division).
//
// The quantized matrix is described by row segments: the assembled
// [batch * q_rows, q_cols] matrix (batch matrices stacked) is a sequence of
// runs of whole rows, each run read from one source with its own row stride.
// This covers every OutputTensor whose pieces are untransposed and span
// whole output rows (plain weights, fused or per-expert experts, vLLM w13
// gate/up halves with TP slicing, w2 column slices); BuildFp8RowSegments
// (kernels/fp8_segments.h) derives them.
#ifndef WEIGHTCAST_KERNELS_FP8_CUDA_H_
#define WEIGHTCAST_KERNELS_FP8_CUDA_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace weightcast {

// A run of whole rows of the assembled matrix.
struct Fp8RowSegment {
  uint64_t src = 0;          // device address of the run's first row
  uint64_t row_stride = 0;   // bytes between rows in the source
  uint64_t first_row = 0;    // global row (matrix b's row r is b * q_rows + r)
  uint64_t rows = 0;
  // The non-finite guard (Fp8QuantizeParams::guard): address of element 0 of
  // the source this run reads, so an element's flat index is
  // (address - guard_base) / element size, and the guard word it goes to.
  uint64_t guard_base = 0;
  uint32_t guard_slot = 0;
  uint32_t reserved = 0;
};

// Source element types the kernel reads (values of common/dtype.h's DType).
enum class Fp8SourceType : int { kF16 = 7, kBF16 = 8, kF32 = 9 };

struct Fp8QuantizeParams {
  const Fp8RowSegment* segments = nullptr;  // device array, sorted by first_row,
  uint32_t num_segments = 0;                // covering [row_begin, row_end) without gaps
  Fp8SourceType src_type = Fp8SourceType::kBF16;
  uint64_t q_rows = 0;  // rows of one matrix
  uint64_t q_cols = 0;
  // Global rows to quantize: row_begin at a 128-row band start of its
  // matrix; row_end at a band end or a matrix end.
  uint64_t row_begin = 0;
  uint64_t row_end = 0;
  int scale_rule = 0;         // Fp8ScaleRule: 0 kAmaxClamp, 1 kScaleClamp
  bool power_of_two = false;  // UE8M0 scales
  // Outputs (device; either may be null): fp8 codes of rows
  // [row_begin, row_end), row-major with q_cols per row; and f32 scales of
  // the bands those rows span, ceil(q_cols/128) per band, bands in order.
  uint8_t* dst_q = nullptr;
  float* dst_scales = nullptr;
  // Optional (device): the non-finite guard words, one per guard_slot
  // (kernels/finite_bits.h findings; set to kNoFinding before the launch).
  // Every non-NaN/inf element read lowers its slot's word to its finding
  // (atomicMin). Null: not checked.
  unsigned long long* guard = nullptr;
};

// The bands (128-row units over all matrices) `p` quantizes: [first, first +
// count). cudaErrorInvalidValue when the parameters are inconsistent (row
// range not band aligned, empty segments, unknown type or rule, no
// outputs); count 0 for an empty range. The launcher's checks, shared with
// its host twin (kernels/host_twin).
struct Fp8Bands {
  uint64_t first = 0;
  uint64_t count = 0;
};
inline cudaError_t Fp8BandsOf(const Fp8QuantizeParams& p, Fp8Bands* out) {
  constexpr uint64_t kB = 128;
  *out = Fp8Bands{};
  if (p.segments == nullptr || p.num_segments == 0 || p.q_rows == 0 || p.q_cols == 0) {
    return cudaErrorInvalidValue;
  }
  if (p.src_type != Fp8SourceType::kBF16 && p.src_type != Fp8SourceType::kF16 &&
      p.src_type != Fp8SourceType::kF32) {
    return cudaErrorInvalidValue;
  }
  if (p.dst_q == nullptr && p.dst_scales == nullptr) return cudaErrorInvalidValue;
  if (p.scale_rule != 0 && p.scale_rule != 1) return cudaErrorInvalidValue;
  const uint64_t R = p.q_rows;
  if (p.row_end <= p.row_begin) return p.row_end == p.row_begin ? cudaSuccess : cudaErrorInvalidValue;
  if ((p.row_begin % R) % kB != 0) return cudaErrorInvalidValue;
  const uint64_t end_in_matrix = p.row_end % R;
  if (end_in_matrix != 0 && end_in_matrix % kB != 0) return cudaErrorInvalidValue;
  if ((p.q_cols + kB - 1) / kB > 0x7FFFFFFF) return cudaErrorInvalidValue;
  const uint64_t bands = (R + kB - 1) / kB;
  out->first = (p.row_begin / R) * bands + (p.row_begin % R) / kB;
  out->count = (p.row_end / R) * bands + (end_in_matrix + kB - 1) / kB - out->first;
  return cudaSuccess;
}

// Device scratch bytes LaunchFp8Quantize needs for `n` quantizations.
[[nodiscard]] inline size_t Fp8QuantizeScratchBytes(size_t n) {
  return n * (sizeof(Fp8QuantizeParams) + sizeof(uint64_t));
}

// Enqueues the quantizations params[0..n) (each with its segments already
// in device memory), all in one kernel launch: one 256-thread block per
// 128x128 block of any of them, taken in grid-stride order, a single pass
// over the input (amax, scale, the non-finite guard and encode from
// registers; kernels/fp8_kernel.h). Uploads the host array into `scratch`
// (device memory of Fp8QuantizeScratchBytes(n) bytes, 8-byte aligned), so
// it may be reused when this returns; `scratch`, the segments and the
// outputs must stay valid until the stream passes the kernel. Returns
// cudaErrorInvalidValue before enqueuing anything when any parameters are
// inconsistent (Fp8BandsOf) or `scratch` is null or misaligned.
[[nodiscard]] cudaError_t LaunchFp8Quantize(const Fp8QuantizeParams* params, size_t n,
                                            void* scratch, cudaStream_t stream);

// Dequantizes `batch` matrices [rows, cols] of e4m3fn codes `q` with their
// block scales (ceil(rows/128) x ceil(cols/128) per matrix) into f32 `out`:
// out = decode(q) * scale. NaN codes give NaN.
[[nodiscard]] cudaError_t LaunchFp8Dequantize(const uint8_t* q, const float* scales,
                                              uint64_t batch, uint64_t rows, uint64_t cols,
                                              float* out, cudaStream_t stream);

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_FP8_CUDA_H_
