#include "kernels/pack_reference.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/fp8_reference.h"

namespace weightcast {
namespace {

void CopyRun(std::byte* d, const std::byte* s, uint64_t elems, size_t es, FiniteGuard* guard,
             GuardType type, uint32_t source, uint64_t first_index) {
  if (guard == nullptr || type == GuardType::kNone) {
    std::memcpy(d, s, elems * es);
    return;
  }
  guard->CopyRun(source, type, d, s, first_index, elems);
}

}  // namespace

void GatherElements(const OutputTensor& out, std::span<const HostSource> sources, uint64_t begin,
                    uint64_t end, std::byte* dst, FiniteGuard* guard) {
  const size_t es = DTypeSize(out.source_dtype);
  const GuardType type = GuardTypeOf(out.source_dtype);
  uint64_t piece_start = 0;  // element index of the current piece's first element
  for (const Piece& p : out.pieces) {
    const uint64_t n = p.NumElements();
    const uint64_t lo = std::max(begin, piece_start), hi = std::min(end, piece_start + n);
    if (lo < hi) {
      const std::byte* src = sources[p.source].data;
      std::byte* d = dst + (lo - begin) * es;
      if (!p.transpose) {
        // Element k of the piece is src[offset + (k / cols) * stride + k % cols]:
        // copy row runs.
        for (uint64_t k = lo - piece_start; k < hi - piece_start;) {
          const uint64_t r = k / p.cols, c = k % p.cols;
          const uint64_t run = std::min(p.cols - c, hi - piece_start - k);
          const uint64_t at = p.src_offset + r * p.src_row_stride + c;
          CopyRun(d, src + at * es, run, es, guard, type, p.source, at);
          d += run * es;
          k += run;
        }
      } else {
        // Output [cols, rows]: element k is src row k % rows, column k / rows.
        for (uint64_t k = lo - piece_start; k < hi - piece_start; ++k) {
          const uint64_t c = k / p.rows, r = k % p.rows;
          const uint64_t at = p.src_offset + r * p.src_row_stride + c;
          std::memcpy(d, src + at * es, es);
          if (guard != nullptr) guard->ScanRun(p.source, type, src + at * es, at, 1);
          d += es;
        }
      }
    }
    piece_start += n;
    if (piece_start >= end) break;
  }
}

absl::Status PackOutputRange(const OutputTensor& out, std::span<const HostSource> sources,
                             uint64_t byte_offset, uint64_t bytes, std::byte* dst,
                             FiniteGuard* guard) {
  const uint64_t total = out.spec.ByteSize();
  if (byte_offset > total || bytes > total - byte_offset) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", out.spec.name, "': range [",
                                                   byte_offset, ", +", bytes, ") outside ", total,
                                                   " bytes"));
  }
  const size_t out_es = DTypeSize(out.spec.dtype);
  if (out.quant == QuantKind::kNone) {
    if (byte_offset % out_es != 0 || bytes % out_es != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", out.spec.name, "': range not element aligned"));
    }
    GatherElements(out, sources, byte_offset / out_es, (byte_offset + bytes) / out_es, dst,
                   guard);
    return absl::OkStatus();
  }
  const uint64_t unit = out.SplitUnitBytes();
  if (byte_offset % unit != 0 || (bytes % unit != 0 && byte_offset + bytes != total)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", out.spec.name, "': FP8 range must be aligned to ", unit, " bytes"));
  }
  const uint64_t R = out.q_rows, C = out.q_cols;
  const uint64_t bands = (R + kFp8Block - 1) / kFp8Block;
  const uint64_t col_blocks = (C + kFp8Block - 1) / kFp8Block;
  // Walk (matrix, band) units covered by the byte range.
  const bool weight = out.quant == QuantKind::kFp8Weight;
  // Bytes of one band in the output, and bands per unit.
  const uint64_t band_bytes = weight ? kFp8Block * C : col_blocks * sizeof(float);
  const uint64_t matrix_bytes = weight ? R * C : bands * col_blocks * sizeof(float);
  std::vector<std::byte> raw;
  std::vector<float> values;
  std::vector<float> scales;
  uint64_t pos = byte_offset;
  const uint64_t end = byte_offset + bytes;
  while (pos < end) {
    const uint64_t b = pos / matrix_bytes;
    const uint64_t band = (pos % matrix_bytes) / band_bytes;
    // One unit: a band when R % 128 == 0, else the whole matrix.
    const uint64_t r0 = R % kFp8Block == 0 ? band * kFp8Block : 0;
    const uint64_t r1 = R % kFp8Block == 0 ? std::min(R, r0 + kFp8Block) : R;
    const uint64_t e0 = b * R * C + r0 * C, e1 = b * R * C + r1 * C;
    raw.resize((e1 - e0) * DTypeSize(out.source_dtype));
    GatherElements(out, sources, e0, e1, raw.data(), guard);
    values.resize(e1 - e0);
    for (uint64_t i = 0; i < e1 - e0; ++i) values[i] = LoadAsFloat(out.source_dtype, raw.data(), i);
    const uint64_t unit_bands = (r1 - r0 + kFp8Block - 1) / kFp8Block;
    std::byte* d = dst + (pos - byte_offset);
    if (weight) {
      QuantizeRows(values.data(), r0, r1, C, out.fp8, reinterpret_cast<uint8_t*>(d), nullptr);
      pos += (r1 - r0) * C;
    } else {
      scales.resize(unit_bands * col_blocks);
      QuantizeRows(values.data(), r0, r1, C, out.fp8, nullptr, scales.data());
      std::memcpy(d, scales.data(), scales.size() * sizeof(float));
      pos += scales.size() * sizeof(float);
    }
  }
  return absl::OkStatus();
}

}  // namespace weightcast
