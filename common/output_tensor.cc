#include "common/output_tensor.h"

#include "absl/strings/str_cat.h"

namespace weightcast {

uint64_t OutputTensor::SplitUnitBytes() const {
  const uint64_t elem = DTypeSize(spec.dtype);
  switch (quant) {
    case QuantKind::kNone:
      return elem;
    case QuantKind::kFp8Weight:
      // 128-row bands when they tile every matrix exactly, else whole matrices.
      if (q_rows % kFp8Block == 0) return kFp8Block * q_cols * elem;
      return q_rows * q_cols * elem;
    case QuantKind::kFp8Scale: {
      // One row of scales is one 128-row band of the weight.
      const uint64_t scale_cols = (q_cols + kFp8Block - 1) / kFp8Block;
      if (q_rows % kFp8Block == 0) return scale_cols * elem;
      return ((q_rows + kFp8Block - 1) / kFp8Block) * scale_cols * elem;
    }
  }
  return elem;
}

OutputTensor CopyOf(const TensorSpec& source, uint32_t index) {
  OutputTensor out;
  out.spec = source;
  out.source_dtype = source.dtype;
  const uint64_t n = source.NumElements();
  if (n > 0) {
    out.pieces.push_back(Piece{.source = index, .src_offset = 0, .rows = 1,
                               .cols = n, .src_row_stride = n});
  }
  return out;
}

bool IsWholeCopy(const OutputTensor& out, std::span<const TensorSpec> sources) {
  if (out.quant != QuantKind::kNone || out.pieces.size() != 1) return false;
  const Piece& p = out.pieces[0];
  if (p.source >= sources.size()) return false;
  const TensorSpec& source = sources[p.source];
  return p.src_offset == 0 && !p.transpose && p.NumElements() == source.NumElements() &&
         (p.rows <= 1 || p.src_row_stride == p.cols) && out.spec.ByteSize() == source.ByteSize();
}

absl::Status ValidateOutputTensor(const OutputTensor& out,
                                  std::span<const TensorSpec> sources) {
  const std::string& name = out.spec.name;
  if (absl::Status s = ValidateTensorSpec(out.spec); !s.ok()) return s;
  uint64_t elements = 0;
  for (size_t i = 0; i < out.pieces.size(); ++i) {
    const Piece& p = out.pieces[i];
    if (p.source >= sources.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "output '", name, "' piece ", i, ": source ", p.source, " out of range"));
    }
    const TensorSpec& src = sources[p.source];
    if (src.dtype != out.source_dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          "output '", name, "' piece ", i, ": source '", src.name, "' is ",
          DTypeName(src.dtype), ", expected ", DTypeName(out.source_dtype)));
    }
    if (p.rows == 0 || p.cols == 0) continue;
    if (p.rows > 1 && p.src_row_stride < p.cols) {
      return absl::InvalidArgumentError(absl::StrCat(
          "output '", name, "' piece ", i, ": row stride below row length"));
    }
    const unsigned __int128 last = static_cast<unsigned __int128>(p.src_offset) +
                                   static_cast<unsigned __int128>(p.rows - 1) * p.src_row_stride +
                                   p.cols;
    if (last > src.NumElements()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "output '", name, "' piece ", i, " reads past the end of source '",
          src.name, "'"));
    }
    elements += p.NumElements();
  }
  switch (out.quant) {
    case QuantKind::kNone:
      if (out.spec.dtype != out.source_dtype) {
        return absl::InvalidArgumentError(absl::StrCat(
            "output '", name, "': dtype differs from its source without quantization"));
      }
      if (elements != out.spec.NumElements()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "output '", name, "': pieces hold ", elements, " elements, shape needs ",
            out.spec.NumElements()));
      }
      break;
    case QuantKind::kFp8Weight:
    case QuantKind::kFp8Scale: {
      if (!IsQuantizableFloat(out.source_dtype)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "output '", name, "': cannot quantize ", DTypeName(out.source_dtype)));
      }
      if (out.q_batch * out.q_rows * out.q_cols != elements) {
        return absl::InvalidArgumentError(absl::StrCat(
            "output '", name, "': quantized matrices do not match the pieces"));
      }
      const uint64_t br = (out.q_rows + kFp8Block - 1) / kFp8Block;
      const uint64_t bc = (out.q_cols + kFp8Block - 1) / kFp8Block;
      const bool weight = out.quant == QuantKind::kFp8Weight;
      const DType want = weight ? DType::kF8E4M3 : DType::kF32;
      const uint64_t want_elems = weight ? elements : out.q_batch * br * bc;
      if (out.spec.dtype != want || out.spec.NumElements() != want_elems) {
        return absl::InvalidArgumentError(absl::StrCat(
            "output '", name, "': FP8 ", weight ? "weight" : "scale",
            " must be ", DTypeName(want), " with ", want_elems, " elements"));
      }
      break;
    }
  }
  return absl::OkStatus();
}

}  // namespace weightcast
