#include "kernels/fp8_segments.h"

#include "absl/strings/str_cat.h"

namespace weightcast {

absl::Status BuildFp8Launch(const OutputTensor& out, uint64_t byte_offset, uint64_t bytes,
                            std::span<const uint64_t> source_addrs, uint64_t bucket,
                            uint64_t bucket_offset, Fp8Launch* launch,
                            std::span<const uint32_t> guard_slots) {
  const std::string& name = out.spec.name;
  if (out.quant == QuantKind::kNone) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is not FP8"));
  }
  Fp8SourceType type;
  switch (out.source_dtype) {
    case DType::kBF16: type = Fp8SourceType::kBF16; break;
    case DType::kF16: type = Fp8SourceType::kF16; break;
    case DType::kF32: type = Fp8SourceType::kF32; break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': source dtype ", DTypeName(out.source_dtype),
                       " cannot be quantized"));
  }
  const uint64_t R = out.q_rows, C = out.q_cols;
  if (R == 0 || C == 0 || out.q_batch == 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': empty FP8 matrix"));
  }
  const uint64_t total = out.spec.ByteSize();
  const uint64_t unit = out.SplitUnitBytes();
  if (byte_offset > total || bytes > total - byte_offset || byte_offset % unit != 0 ||
      (bytes % unit != 0 && byte_offset + bytes != total)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': FP8 range [",
                                                   byte_offset, ", +", bytes,
                                                   ") not aligned to ", unit, " bytes"));
  }
  const uint64_t bands = (R + kFp8Block - 1) / kFp8Block;
  const uint64_t col_blocks = (C + kFp8Block - 1) / kFp8Block;
  const bool weight = out.quant == QuantKind::kFp8Weight;
  // Global rows covered by the range.
  uint64_t row_begin, row_end;
  if (weight) {
    row_begin = byte_offset / C;
    row_end = (byte_offset + bytes) / C;
  } else {
    const uint64_t band_begin = byte_offset / (col_blocks * sizeof(float));
    const uint64_t band_end = (byte_offset + bytes) / (col_blocks * sizeof(float));
    row_begin = (band_begin / bands) * R + (band_begin % bands) * kFp8Block;
    row_end = (band_end / bands) * R + std::min(R, (band_end % bands) * kFp8Block);
    if (band_end % bands == 0) row_end = (band_end / bands) * R;
  }
  launch->segments.clear();
  // Row segments: each piece is a run of whole output rows.
  const size_t es = DTypeSize(out.source_dtype);
  uint64_t elem = 0;
  for (size_t pi = 0; pi < out.pieces.size(); ++pi) {
    const Piece& p = out.pieces[pi];
    const uint64_t n = p.NumElements();
    if (n == 0) continue;
    if (p.transpose || elem % C != 0 || (p.cols != C && p.rows != 1) ||
        (p.rows == 1 && p.cols % C != 0)) {
      return absl::UnimplementedError(absl::StrCat(
          "tensor '", name, "' piece ", pi, ": GPU FP8 needs untransposed whole-row pieces"));
    }
    if (p.source >= source_addrs.size() ||
        (!guard_slots.empty() && p.source >= guard_slots.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' piece ", pi, ": source ", p.source, " not given"));
    }
    const uint64_t first_row = elem / C;
    const uint64_t rows = n / C;
    // A single long row (rows == 1, cols == k * C) is k contiguous rows.
    const uint64_t stride = p.rows == 1 ? C * es : p.src_row_stride * es;
    const uint64_t lo = std::max(first_row, row_begin), hi = std::min(first_row + rows, row_end);
    if (lo < hi) {
      launch->segments.push_back(Fp8RowSegment{
          .src = source_addrs[p.source] + p.src_offset * es + (lo - first_row) * stride,
          .row_stride = stride,
          .first_row = lo,
          .rows = hi - lo,
          .guard_base = source_addrs[p.source],
          .guard_slot = guard_slots.empty() ? 0 : guard_slots[p.source]});
    }
    elem += n;
  }
  if (elem != out.q_batch * R * C) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': pieces hold ", elem,
                                                   " elements, FP8 matrix needs ",
                                                   out.q_batch * R * C));
  }
  Fp8QuantizeParams& q = launch->params;
  q = Fp8QuantizeParams{};
  q.num_segments = static_cast<uint32_t>(launch->segments.size());
  q.src_type = type;
  q.q_rows = R;
  q.q_cols = C;
  q.row_begin = row_begin;
  q.row_end = row_end;
  q.scale_rule = static_cast<int>(out.fp8.rule);
  q.power_of_two = out.fp8.power_of_two;
  if (weight) {
    q.dst_q = reinterpret_cast<uint8_t*>(bucket + bucket_offset);
  } else {
    q.dst_scales = reinterpret_cast<float*>(bucket + bucket_offset);
  }
  return absl::OkStatus();
}

}  // namespace weightcast
