// CopyEntry: one strided 2-D copy, the unit of the GPU pack and unpack
// kernels. Plain data shared by g++ (the table builder and the CPU
// interpreter used in tests) and nvcc (the kernel).
//
// Semantics, for r in [0, rows), c in [0, cols), elements of `elem_size` bytes:
//   transpose == 0:  dst[r * dst_row_stride + c] = src[r * src_row_stride + c]
//   transpose == 1:  dst[c * dst_row_stride + r] = src[r * src_row_stride + c]
// Strides are in bytes. Pack: src = a source tensor, dst = the bucket
// (dense rows). Unpack: the same entry inverted (InvertCopyEntry).
//
// The non-finite guard (kernels/finite_bits.h): with guard_type != 0 and
// guard words given to the executor, every element copied is checked as it
// is read, and a NaN / +-inf element at address a lowers word guard_slot to
// EncodeFinding((a - guard_base) / elem_size, class): guard_base is the
// address of element 0 of the source tensor, so the index is its flat one.
//
// Work split: an entry is cut into tiles (TilesOf) that the kernel's blocks
// take in grid-stride order; a table carries the running tile count of each
// entry so a block finds its entry by binary search.
#ifndef WEIGHTCAST_KERNELS_COPY_TABLE_H_
#define WEIGHTCAST_KERNELS_COPY_TABLE_H_

#include <cstdint>

#include "kernels/host_device.h"

namespace weightcast {

struct CopyEntry {
  uint64_t src = 0;  // address of element (0, 0)
  uint64_t dst = 0;  // address of the destination of element (0, 0)
  uint64_t src_row_stride = 0;  // bytes
  uint64_t dst_row_stride = 0;  // bytes
  uint64_t rows = 0;
  uint64_t cols = 0;
  uint32_t elem_size = 0;  // 1, 2, 4 or 8
  uint32_t transpose = 0;
  uint64_t guard_base = 0;  // address of the source's element 0
  uint32_t guard_type = 0;  // GuardType (kernels/finite_bits.h); 0: not checked
  uint32_t guard_slot = 0;
};

// Row copies move up to this many bytes of one row per tile.
inline constexpr uint64_t kCopyTileBytes = 16384;
// Transposed copies move a kTransposeTile x kTransposeTile element tile.
inline constexpr uint64_t kTransposeTile = 32;

WC_HOST_DEVICE inline uint64_t TilesOf(const CopyEntry& e) {
  if (e.rows == 0 || e.cols == 0) return 0;
  if (e.transpose == 0) {
    const uint64_t row_bytes = e.cols * e.elem_size;
    return e.rows * ((row_bytes + kCopyTileBytes - 1) / kCopyTileBytes);
  }
  return ((e.rows + kTransposeTile - 1) / kTransposeTile) *
         ((e.cols + kTransposeTile - 1) / kTransposeTile);
}

// The entry that undoes `e` (copies dst back to src).
WC_HOST_DEVICE inline CopyEntry InvertCopyEntry(const CopyEntry& e) {
  CopyEntry inv = e;
  inv.src = e.dst;
  inv.dst = e.src;
  inv.src_row_stride = e.dst_row_stride;
  inv.dst_row_stride = e.src_row_stride;
  if (e.transpose != 0) {
    inv.rows = e.cols;
    inv.cols = e.rows;
  }
  inv.guard_type = 0;  // it reads the bucket, not a source
  return inv;
}

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_COPY_TABLE_H_
