// The data plane's kernel launchers on the host (kernels/host_twin/README.md):
// each checks what the GPU launcher checks, plus that every address the
// kernel would touch is device (or pinned) memory, then does the work with
// the CPU twin the GPU kernel is tested against (ChunkDigest), or, for the
// copy table and FP8, the kernels' own thread code run on the host
// (kernels/copy_kernel.h, kernels/fp8_kernel.h), which copy_kernel_test and
// fp8_kernel_test check against ExecuteCopyTableOnHost and QuantizeRows.
// Synchronous, so any stream order holds.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/checksum.h"
#include "kernels/checksum_cuda.h"
#include "kernels/copy_kernel_host.h"
#include "kernels/fp8_cuda.h"
#include "kernels/fp8_kernel_host.h"
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

cudaError_t LaunchFp8Quantize(const Fp8QuantizeParams* params, size_t n, void* scratch,
                              cudaStream_t /*stream*/) {
  if (n == 0) return cudaSuccess;
  if (params == nullptr || scratch == nullptr) return cudaErrorInvalidValue;
  if (!KernelAccessible(scratch, Fp8QuantizeScratchBytes(n))) {
    return Refuse("LaunchFp8Quantize", "scratch is not device memory of Fp8QuantizeScratchBytes(n)",
                  scratch, Fp8QuantizeScratchBytes(n));
  }
  for (size_t i = 0; i < n; ++i) {
    const Fp8QuantizeParams& p = params[i];
    Fp8Bands span;
    if (const cudaError_t err = Fp8BandsOf(p, &span); err != cudaSuccess) return err;
    if (span.count == 0) continue;
    const uint64_t C = p.q_cols, kB = kFp8Block;
    if (!KernelAccessible(p.segments, p.num_segments * sizeof(Fp8RowSegment))) {
      return Refuse("LaunchFp8Quantize", "segments are not device memory", p.segments,
                    p.num_segments * sizeof(Fp8RowSegment));
    }
    const int es = p.src_type == Fp8SourceType::kF32 ? 4 : 2;
    const std::span<const Fp8RowSegment> segs(p.segments, p.num_segments);
    // Every row the kernel reads lies in a segment, in device memory.
    for (uint64_t g = p.row_begin; g < p.row_end; ++g) {
      const auto it = std::upper_bound(segs.begin(), segs.end(), g,
                                       [](uint64_t x, const Fp8RowSegment& s) {
                                         return x < s.first_row;
                                       });
      if (it == segs.begin() || g >= (it - 1)->first_row + (it - 1)->rows) {
        return Refuse("LaunchFp8Quantize", "a row no segment covers");
      }
      const Fp8RowSegment& s = *(it - 1);
      const auto* src = reinterpret_cast<const uint8_t*>(s.src) + (g - s.first_row) * s.row_stride;
      if (!KernelAccessible(src, C * es)) {
        return Refuse("LaunchFp8Quantize", "a segment reads outside device memory", src, C * es);
      }
    }
    if (p.dst_q != nullptr && !KernelAccessible(p.dst_q, (p.row_end - p.row_begin) * C)) {
      return Refuse("LaunchFp8Quantize", "codes land outside device memory");
    }
    const uint64_t col_blocks = (C + kB - 1) / kB;
    if (p.dst_scales != nullptr &&
        !KernelAccessible(p.dst_scales, span.count * col_blocks * sizeof(float))) {
      return Refuse("LaunchFp8Quantize", "scales land outside device memory");
    }
    if (p.guard != nullptr) {
      uint32_t slots = 0;
      for (const Fp8RowSegment& s : segs) slots = std::max(slots, s.guard_slot + 1);
      if (!KernelAccessible(p.guard, slots * sizeof(uint64_t))) {
        return Refuse("LaunchFp8Quantize", "guard words are not device memory", p.guard,
                      slots * sizeof(uint64_t));
      }
    }
  }
  // The kernel's own thread code, block by block (kernels/fp8_kernel_host.h).
  return RunFp8KernelOnHost(params, n) ? cudaSuccess : cudaErrorInvalidValue;
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
