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
// entry so a block finds its entry by binary search. Rows longer than
// kTeamRowBytes are cut into tiles of up to kCopyTileBytes of one row, each
// moved by a whole block; shorter rows are grouped, about kCopyTileBytes
// of them to a tile, and each row is moved by a team of lanes sized to it
// (1 to 32 threads of one warp), so a short row (a tensor-parallel slice, a
// column of a transposed piece) no longer leaves most of a block idle.
#ifndef WEIGHTCAST_KERNELS_COPY_TABLE_H_
#define WEIGHTCAST_KERNELS_COPY_TABLE_H_

#include <cstdint>

#include "kernels/finite_bits.h"
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

// Threads of a copy-table block (the kernel's launch bounds).
inline constexpr uint64_t kCopyThreads = 256;
// Row copies move up to this many bytes per tile.
inline constexpr uint64_t kCopyTileBytes = 16384;
// Rows of at most this many bytes are moved by a team of lanes each.
inline constexpr uint64_t kTeamRowBytes = 4096;
// Transposed copies move a kTransposeTile x kTransposeTile element tile.
inline constexpr uint64_t kTransposeTile = 32;

// How a plain (not transposed) entry's rows are cut into tiles.
struct RowTiling {
  // Long rows: tiles per row (a tile is kCopyTileBytes of one row, moved by
  // the whole block). 0 for short rows.
  uint64_t tiles_per_row = 0;
  // Short rows: threads per row (a power of two up to 32, enough for one
  // 16-byte word each) and rows per tile; team k of a tile's
  // kCopyThreads / lanes teams moves rows k, k + teams, ...
  uint64_t lanes = 0;
  uint64_t rows_per_tile = 0;
};

WC_HOST_DEVICE inline RowTiling RowTilingOf(const CopyEntry& e) {
  RowTiling t;
  const uint64_t row_bytes = e.cols * e.elem_size;
  if (row_bytes > kTeamRowBytes) {
    t.tiles_per_row = (row_bytes + kCopyTileBytes - 1) / kCopyTileBytes;
    return t;
  }
  // 32-bit arithmetic from here (row_bytes <= kTeamRowBytes): the kernel
  // computes this per tile.
  const uint32_t bytes = static_cast<uint32_t>(row_bytes > 0 ? row_bytes : 1);
  const uint32_t words = (bytes + 15) / 16;
  uint32_t lanes = 1;
  while (lanes < 32 && lanes < words) lanes *= 2;
  const uint32_t teams = static_cast<uint32_t>(kCopyThreads) / lanes;
  const uint32_t rounds = static_cast<uint32_t>(kCopyTileBytes) / (teams * bytes);
  t.lanes = lanes;
  t.rows_per_tile = teams * (rounds > 0 ? rounds : 1);
  return t;
}

WC_HOST_DEVICE inline uint64_t TilesOf(const CopyEntry& e) {
  if (e.rows == 0 || e.cols == 0) return 0;
  if (e.transpose == 0) {
    const RowTiling t = RowTilingOf(e);
    if (t.tiles_per_row > 0) return e.rows * t.tiles_per_row;
    return (e.rows + t.rows_per_tile - 1) / t.rows_per_tile;
  }
  return ((e.rows + kTransposeTile - 1) / kTransposeTile) *
         ((e.cols + kTransposeTile - 1) / kTransposeTile);
}

// The launchers' checks of a table, and the kernel's index of it: entry i's
// tiles end at tile_end[i] (running count). False (the launch is refused
// before anything is enqueued) for an element size other than 1/2/4/8, a
// null address in a non-empty entry, a transposed entry whose addresses or
// strides are not whole elements, or, when `guarded`, a guarded entry whose
// element size is not its type's or that reads below its guard base.
// `*total` is the table's tile count.
inline bool IndexCopyTable(const CopyEntry* entries, size_t n, bool guarded, uint64_t* tile_end,
                           uint64_t* total) {
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) {
    const CopyEntry& e = entries[i];
    if (e.elem_size != 1 && e.elem_size != 2 && e.elem_size != 4 && e.elem_size != 8) return false;
    const uint64_t tiles = TilesOf(e);
    if (tiles > 0 && (e.src == 0 || e.dst == 0)) return false;
    if (e.transpose != 0 &&
        ((e.src | e.dst | e.src_row_stride | e.dst_row_stride) % e.elem_size) != 0) {
      return false;  // transposes move whole aligned elements
    }
    if (guarded && e.guard_type != 0 &&
        (LanesOf(static_cast<GuardType>(e.guard_type)).bytes != e.elem_size ||
         (tiles > 0 && e.src < e.guard_base))) {
      return false;  // the guard reads whole elements of its source
    }
    sum += tiles;
    tile_end[i] = sum;
  }
  *total = sum;
  return true;
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
