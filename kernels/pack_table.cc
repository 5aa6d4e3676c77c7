#include "kernels/pack_table.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/finite_guard.h"

namespace weightcast {
namespace {

// Appends `e` to `table` with the fewest entries the kernel can take: a
// plain copy whose rows are contiguous in the source (its stride is its row)
// becomes one long row, and a long row that continues the previous entry,
// in the source and in the bucket, with the same guard, extends it. The
// kernel cuts long rows into kCopyTileBytes tiles, so small rows no longer
// cost a block each. Entries before `first` (not this call's: the caller's,
// or an unpack's already inverted ones) are never touched.
void AppendCopy(std::vector<CopyEntry>* table, size_t first, CopyEntry e) {
  if (e.transpose == 0 && e.rows > 1 && e.src_row_stride == e.cols * e.elem_size &&
      e.dst_row_stride == e.cols * e.elem_size) {
    e.cols *= e.rows;
    e.rows = 1;
    e.src_row_stride = e.dst_row_stride = e.cols * e.elem_size;
  }
  if (table->size() > first) {
    CopyEntry& last = table->back();
    const uint64_t last_bytes = last.cols * last.elem_size;
    if (last.transpose == 0 && e.transpose == 0 && last.rows == 1 && e.rows == 1 &&
        last.elem_size == e.elem_size && last.guard_type == e.guard_type &&
        last.guard_slot == e.guard_slot && last.guard_base == e.guard_base &&
        last.src + last_bytes == e.src && last.dst + last_bytes == e.dst) {
      last.cols += e.cols;
      last.src_row_stride = last.dst_row_stride = last.cols * last.elem_size;
      return;
    }
  }
  table->push_back(e);
}

}  // namespace

absl::Status BuildPackTable(const OutputTensor& out, uint64_t byte_offset, uint64_t bytes,
                            std::span<const uint64_t> source_addrs, uint64_t bucket,
                            uint64_t bucket_offset, std::vector<CopyEntry>* table,
                            std::span<const uint32_t> guard_slots) {
  const std::string& name = out.spec.name;
  const GuardType guard_type = guard_slots.empty() ? GuardType::kNone : GuardTypeOf(out.source_dtype);
  if (out.quant != QuantKind::kNone) {
    return absl::UnimplementedError(
        absl::StrCat("tensor '", name, "': FP8 outputs are packed by the FP8 kernel"));
  }
  const uint64_t es = DTypeSize(out.source_dtype);
  const uint64_t total = out.spec.ByteSize();
  if (byte_offset > total || bytes > total - byte_offset) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': range [", byte_offset,
                                                   ", +", bytes, ") outside ", total, " bytes"));
  }
  if (byte_offset % es != 0 || bytes % es != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "': range not aligned to ", es, "-byte elements"));
  }
  const uint64_t begin = byte_offset / es, end = (byte_offset + bytes) / es;
  uint64_t piece_start = 0;
  uint64_t dst = bucket + bucket_offset;
  const size_t first_entry = table->size();
  for (size_t pi = 0; pi < out.pieces.size() && piece_start < end; ++pi) {
    const Piece& p = out.pieces[pi];
    const uint64_t n = p.NumElements();
    const uint64_t lo = std::max(begin, piece_start), hi = std::min(end, piece_start + n);
    piece_start += n;
    if (lo >= hi) continue;
    if (p.source >= source_addrs.size() ||
        (guard_type != GuardType::kNone && p.source >= guard_slots.size())) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' piece ", pi,
                                                     ": source ", p.source, " not given"));
    }
    const uint64_t base = source_addrs[p.source] + p.src_offset * es;
    const uint64_t stride = p.src_row_stride * es;
    // In output order the piece is a [outer, inner] matrix: rows x cols, or
    // cols x rows when transposed. Element (o, i) of it is source element
    // (r, c) = (o, i) or (i, o).
    const uint64_t inner = p.transpose ? p.rows : p.cols;
    auto emit = [&](uint64_t o, uint64_t i0, uint64_t outer_count, uint64_t inner_count) {
      CopyEntry e;
      e.elem_size = static_cast<uint32_t>(es);
      e.dst = dst;
      if (guard_type != GuardType::kNone) {
        e.guard_base = source_addrs[p.source];
        e.guard_type = static_cast<uint32_t>(guard_type);
        e.guard_slot = guard_slots[p.source];
      }
      if (!p.transpose) {
        e.src = base + o * stride + i0 * es;
        e.rows = outer_count;
        e.cols = inner_count;
        e.src_row_stride = stride;
        e.dst_row_stride = inner_count * es;
        e.transpose = 0;
      } else if (outer_count == 1) {
        // Part of one output row = part of one source column: a plain
        // column copy (inner_count rows of 1 element).
        e.src = base + i0 * stride + o * es;
        e.rows = inner_count;
        e.cols = 1;
        e.src_row_stride = stride;
        e.dst_row_stride = es;
        e.transpose = 0;
      } else {
        // Whole output rows o..o+outer_count: source columns, all rows.
        e.src = base + o * es;
        e.rows = inner_count;  // == p.rows
        e.cols = outer_count;
        e.src_row_stride = stride;
        e.dst_row_stride = inner_count * es;
        e.transpose = 1;
      }
      AppendCopy(table, first_entry, e);
      dst += outer_count * inner_count * es;
    };
    uint64_t k = lo - (piece_start - n), k_end = hi - (piece_start - n);
    // Head: a partial output row.
    if (k % inner != 0) {
      const uint64_t o = k / inner, i0 = k % inner;
      const uint64_t cnt = std::min(inner - i0, k_end - k);
      emit(o, i0, 1, cnt);
      k += cnt;
    }
    // Body: whole output rows.
    const uint64_t whole = (k_end - k) / inner;
    if (whole > 0) {
      emit(k / inner, 0, whole, inner);
      k += whole * inner;
    }
    // Tail: a partial output row.
    if (k < k_end) emit(k / inner, 0, 1, k_end - k);
  }
  return absl::OkStatus();
}

absl::Status BuildPackTableForPiece(const OutputTensor& out, size_t piece, uint64_t piece_start,
                                    uint64_t source_addr, uint64_t dst,
                                    std::vector<CopyEntry>* table) {
  if (out.quant != QuantKind::kNone) {
    return absl::UnimplementedError(
        absl::StrCat("tensor '", out.spec.name, "': FP8 outputs are packed by the FP8 kernel"));
  }
  if (piece >= out.pieces.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", out.spec.name, "': no piece ", piece));
  }
  const Piece& p = out.pieces[piece];
  const uint64_t n = p.NumElements();
  if (n == 0) return absl::OkStatus();
  const uint64_t es = DTypeSize(out.source_dtype);
  const uint64_t addrs[1] = {source_addr};
  // The piece alone, as a one-piece output over source 0.
  OutputTensor one;
  one.spec.name = out.spec.name;
  one.spec.dtype = out.source_dtype;
  one.spec.shape = {static_cast<int64_t>(n)};
  one.source_dtype = out.source_dtype;
  one.pieces = {p};
  one.pieces[0].source = 0;
  return BuildPackTable(one, 0, n * es, addrs, dst, piece_start * es, table);
}

absl::Status BuildPackTableForSource(const OutputTensor& out, uint32_t source,
                                     uint64_t source_addr, uint64_t dst,
                                     std::vector<CopyEntry>* table) {
  if (out.quant != QuantKind::kNone) {
    return absl::UnimplementedError(
        absl::StrCat("tensor '", out.spec.name, "': FP8 outputs are packed by the FP8 kernel"));
  }
  uint64_t at = 0;  // output element where the piece starts
  for (size_t i = 0; i < out.pieces.size(); ++i) {
    if (out.pieces[i].source == source) {
      RETURN_IF_ERROR(BuildPackTableForPiece(out, i, at, source_addr, dst, table));
    }
    at += out.pieces[i].NumElements();
  }
  return absl::OkStatus();
}

absl::Status BuildUnpackTable(const OutputTensor& out, uint64_t byte_offset, uint64_t bytes,
                              std::span<const uint64_t> dest_addrs, uint64_t bucket,
                              uint64_t bucket_offset, std::vector<CopyEntry>* table) {
  const size_t first = table->size();
  if (absl::Status s =
          BuildPackTable(out, byte_offset, bytes, dest_addrs, bucket, bucket_offset, table);
      !s.ok()) {
    return s;
  }
  for (size_t i = first; i < table->size(); ++i) (*table)[i] = InvertCopyEntry((*table)[i]);
  return absl::OkStatus();
}

uint64_t TotalTiles(std::span<const CopyEntry> table) {
  uint64_t n = 0;
  for (const CopyEntry& e : table) n += TilesOf(e);
  return n;
}

namespace {

// The guard's check of `n` elements at `p` (host twin of the kernel's).
void GuardElements(const CopyEntry& e, const std::byte* p, uint64_t n, uint64_t* guard) {
  const NonFiniteLanes l = LanesOf(static_cast<GuardType>(e.guard_type));
  if (guard == nullptr || l.bytes == 0 || l.bytes != e.elem_size) return;
  for (uint64_t k = 0; k < n; ++k) {
    const FiniteClass c = ClassifyElement(LoadElementBits(p + k * l.bytes, l.bytes), l);
    if (c == FiniteClass::kFinite) continue;
    const uint64_t index = (reinterpret_cast<uint64_t>(p + k * l.bytes) - e.guard_base) / l.bytes;
    guard[e.guard_slot] = std::min(guard[e.guard_slot], EncodeFinding(index, c));
  }
}

}  // namespace

void ExecuteCopyTableOnHost(std::span<const CopyEntry> table, uint64_t* guard) {
  for (const CopyEntry& e : table) {
    const auto* src = reinterpret_cast<const std::byte*>(e.src);
    auto* dst = reinterpret_cast<std::byte*>(e.dst);
    if (!e.transpose) {  // whole rows at once
      for (uint64_t r = 0; r < e.rows; ++r) {
        std::memcpy(dst + r * e.dst_row_stride, src + r * e.src_row_stride, e.cols * e.elem_size);
        GuardElements(e, src + r * e.src_row_stride, e.cols, guard);
      }
      continue;
    }
    for (uint64_t r = 0; r < e.rows; ++r) {
      for (uint64_t c = 0; c < e.cols; ++c) {
        const uint64_t d = c * e.dst_row_stride + r * e.elem_size;
        std::memcpy(dst + d, src + r * e.src_row_stride + c * e.elem_size, e.elem_size);
        GuardElements(e, src + r * e.src_row_stride + c * e.elem_size, 1, guard);
      }
    }
  }
}

}  // namespace weightcast
