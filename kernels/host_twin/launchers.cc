// The data plane's kernel launchers on the host (kernels/host_twin/README.md):
// each checks what the GPU launcher checks, plus that every address the
// kernel would touch is device (or pinned) memory, then does the work with
// the CPU twin the GPU kernels are tested against: ChunkDigest,
// QuantizeRows; the copy table runs the kernel's own thread code
// (kernels/copy_kernel.h), which copy_kernel_test checks against
// ExecuteCopyTableOnHost. Synchronous, so any stream order holds.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/checksum.h"
#include "kernels/checksum_cuda.h"
#include "kernels/copy_kernel_host.h"
#include "kernels/finite_bits.h"
#include "kernels/float_bits.h"
#include "kernels/fp8_cuda.h"
#include "kernels/fp8_reference.h"
#include "kernels/host_twin/memory.h"
#include "kernels/pack_cuda.h"
#include "kernels/pack_table.h"

namespace weightcast {
namespace {

using host_twin::KernelAccessible;
using host_twin::Misuse;

cudaError_t Refuse(const char* call, const char* why, const void* p = nullptr, size_t n = 0) {
  return static_cast<cudaError_t>(Misuse(call, why, p, n));
}

// Bytes entry `e` spans on its source (or destination) side, rows by stride.
uint64_t Span(uint64_t rows, uint64_t stride, uint64_t row_bytes) {
  return rows == 0 ? 0 : (rows - 1) * stride + row_bytes;
}

}  // namespace

cudaError_t LaunchCopyTable(const CopyEntry* entries, size_t n, void* scratch,
                            cudaStream_t /*stream*/, unsigned long long* guard) {
  if (n == 0) return cudaSuccess;
  if (scratch == nullptr || entries == nullptr) return cudaErrorInvalidValue;
  if (!KernelAccessible(scratch, CopyTableScratchBytes(n))) {
    return Refuse("LaunchCopyTable", "scratch is not device memory of CopyTableScratchBytes(n)",
                  scratch, CopyTableScratchBytes(n));
  }
  std::vector<uint64_t> tile_end(n);
  uint64_t total = 0;
  if (!IndexCopyTable(entries, n, guard != nullptr, tile_end.data(), &total)) {
    return cudaErrorInvalidValue;  // what the GPU launcher refuses
  }
  for (size_t i = 0; i < n; ++i) {
    const CopyEntry& e = entries[i];
    if (e.rows == 0 || e.cols == 0) continue;
    const uint64_t row = e.cols * e.elem_size;
    const uint64_t src_bytes = Span(e.rows, e.src_row_stride, row);
    // Transposed: element (r, c) lands at dst[c * dst_row_stride + r].
    const uint64_t dst_bytes = e.transpose ? Span(e.cols, e.dst_row_stride, e.rows * e.elem_size)
                                           : Span(e.rows, e.dst_row_stride, row);
    if (!KernelAccessible(reinterpret_cast<const void*>(e.src), src_bytes)) {
      return Refuse("LaunchCopyTable", "an entry reads outside device memory",
                    reinterpret_cast<const void*>(e.src), src_bytes);
    }
    if (!KernelAccessible(reinterpret_cast<const void*>(e.dst), dst_bytes)) {
      return Refuse("LaunchCopyTable", "an entry writes outside device memory",
                    reinterpret_cast<const void*>(e.dst), dst_bytes);
    }
  }
  if (guard != nullptr) {
    uint32_t slots = 0;
    for (size_t i = 0; i < n; ++i) {
      if (entries[i].guard_type != 0) slots = std::max(slots, entries[i].guard_slot + 1);
    }
    if (!KernelAccessible(guard, slots * sizeof(uint64_t))) {
      return Refuse("LaunchCopyTable", "guard words are not device memory", guard,
                    slots * sizeof(uint64_t));
    }
  }
  // The kernel's own thread code, tile by tile (kernels/copy_kernel_host.h).
  return RunCopyKernelOnHost(entries, n, guard) ? cudaSuccess : cudaErrorInvalidValue;
}

cudaError_t LaunchChunkDigests(const void* data, size_t len, uint64_t* digests,
                               cudaStream_t /*stream*/) {
  if (len == 0) return cudaSuccess;
  if (data == nullptr || digests == nullptr) return cudaErrorInvalidValue;
  const size_t chunks = NumChecksumChunks(len);
  if (!KernelAccessible(data, len)) {
    return Refuse("LaunchChunkDigests", "data is not device memory", data, len);
  }
  if (!KernelAccessible(digests, chunks * sizeof(uint64_t))) {
    return Refuse("LaunchChunkDigests", "digests are not device memory", digests,
                  chunks * sizeof(uint64_t));
  }
  const auto* p = static_cast<const std::byte*>(data);
  for (size_t i = 0; i < chunks; ++i) {
    const size_t at = i * kChecksumChunkBytes;
    digests[i] = ChunkDigest(p + at, std::min(kChecksumChunkBytes, len - at), i);
  }
  return cudaSuccess;
}

cudaError_t LaunchFp8Quantize(const Fp8QuantizeParams& p, cudaStream_t /*stream*/) {
  Fp8Bands span;
  if (const cudaError_t err = Fp8BandsOf(p, &span); err != cudaSuccess || span.count == 0) {
    return err;
  }
  const uint64_t R = p.q_rows, C = p.q_cols, kB = kFp8Block;
  if (!KernelAccessible(p.segments, p.num_segments * sizeof(Fp8RowSegment))) {
    return Refuse("LaunchFp8Quantize", "segments are not device memory", p.segments,
                  p.num_segments * sizeof(Fp8RowSegment));
  }
  const int es = p.src_type == Fp8SourceType::kF32 ? 4 : 2;
  const uint64_t col_blocks = (C + kB - 1) / kB;
  const Fp8Options options{.rule = static_cast<Fp8ScaleRule>(p.scale_rule),
                           .power_of_two = p.power_of_two};
  const std::span<const Fp8RowSegment> segs(p.segments, p.num_segments);
  std::vector<float> band(kB * C);
  std::vector<uint8_t> q(kB * C);
  std::vector<float> scales(col_blocks);
  uint64_t band_index = 0;
  for (uint64_t g = p.row_begin; g < p.row_end; ++band_index) {
    const uint64_t b = g / R, r0 = g % R;
    const uint64_t nrows = std::min<uint64_t>(kB, R - r0);
    for (uint64_t r = 0; r < nrows; ++r) {
      const uint64_t row = b * R + r0 + r;
      const auto it = std::upper_bound(segs.begin(), segs.end(), row,
                                       [](uint64_t x, const Fp8RowSegment& s) {
                                         return x < s.first_row;
                                       });
      if (it == segs.begin() || row >= (it - 1)->first_row + (it - 1)->rows) {
        return Refuse("LaunchFp8Quantize", "a row no segment covers");
      }
      const Fp8RowSegment& s = *(it - 1);
      const auto* src = reinterpret_cast<const uint8_t*>(s.src) + (row - s.first_row) * s.row_stride;
      if (!KernelAccessible(src, C * es)) {
        return Refuse("LaunchFp8Quantize", "a segment reads outside device memory", src, C * es);
      }
      for (uint64_t c = 0; c < C; ++c) {
        const uint8_t* at = src + c * es;
        uint16_t h = 0;
        float v = 0;
        if (es == 2) {
          std::memcpy(&h, at, 2);
          v = p.src_type == Fp8SourceType::kBF16 ? Bf16BitsToFloat(h) : HalfBitsToFloat(h);
        } else {
          std::memcpy(&v, at, 4);
        }
        band[r * C + c] = v;
        const FiniteClass k = p.guard != nullptr ? ClassifyFloat(v) : FiniteClass::kFinite;
        if (k != FiniteClass::kFinite) {
          const uint64_t index = (reinterpret_cast<uint64_t>(at) - s.guard_base) / es;
          unsigned long long& word = p.guard[s.guard_slot];
          word = std::min<unsigned long long>(word, EncodeFinding(index, k));
        }
      }
    }
    QuantizeRows(band.data(), 0, nrows, C, options, q.data(), scales.data());
    const uint64_t out_row0 = g - p.row_begin;
    if (p.dst_q != nullptr) {
      if (!KernelAccessible(p.dst_q + out_row0 * C, nrows * C)) {
        return Refuse("LaunchFp8Quantize", "codes land outside device memory");
      }
      std::memcpy(p.dst_q + out_row0 * C, q.data(), nrows * C);
    }
    if (p.dst_scales != nullptr) {
      if (!KernelAccessible(p.dst_scales + band_index * col_blocks, col_blocks * 4)) {
        return Refuse("LaunchFp8Quantize", "scales land outside device memory");
      }
      std::memcpy(p.dst_scales + band_index * col_blocks, scales.data(), col_blocks * 4);
    }
    g += nrows;
  }
  return cudaSuccess;
}

cudaError_t LaunchFp8Dequantize(const uint8_t* q, const float* scales, uint64_t batch,
                                uint64_t rows, uint64_t cols, float* out,
                                cudaStream_t /*stream*/) {
  const uint64_t kB = kFp8Block;
  const uint64_t rb = (rows + kB - 1) / kB, cb = (cols + kB - 1) / kB;
  const uint64_t total = batch * rows * cols;
  if (!KernelAccessible(q, total) || !KernelAccessible(out, total * 4) ||
      !KernelAccessible(scales, batch * rb * cb * 4)) {
    return Refuse("LaunchFp8Dequantize", "an operand is not device memory");
  }
  for (uint64_t i = 0; i < total; ++i) {
    const uint64_t b = i / (rows * cols), r = (i / cols) % rows, c = i % cols;
    out[i] = DecodeE4M3(q[i]) * scales[(b * rb + r / kB) * cb + c / kB];
  }
  return cudaSuccess;
}

}  // namespace weightcast
