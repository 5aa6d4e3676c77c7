// The copy-table kernel's work, thread by thread, written once for nvcc
// (the kernel in pack_cuda.cu) and for g++ (RunCopyKernelOnHost in
// copy_kernel_host.h, which the host twin's launcher and copy_kernel_test
// run): each function is what thread `t` of the block moving one tile does.
// Threads of a block share nothing but the transpose's shared-memory tile,
// whose two halves (TransposeLoadThread, then TransposeStoreThread) the
// kernel separates with __syncthreads and the host run with a loop; so the
// host run, thread after thread, computes what the GPU computes, and a test
// against ExecuteCopyTableOnHost (the semantics) checks the kernel's own
// indexing, tiling, alignment paths and guard on a machine without a GPU.
//
// Only the loads (__ldg) and the guard's atomicMin differ between the two
// compilers (LoadReadOnly here, LowerGuardWord in finite_bits.h).
#ifndef WEIGHTCAST_KERNELS_COPY_KERNEL_H_
#define WEIGHTCAST_KERNELS_COPY_KERNEL_H_

#include <vector_types.h>  // uint2, uint4 (plain structs for g++)

#include <cstdint>

#include "kernels/copy_table.h"
#include "kernels/finite_bits.h"
#include "kernels/host_device.h"

namespace weightcast {

// The non-finite guard of one entry (copy_table.h).
struct EntryGuard {
  NonFiniteLanes lanes;
  uint64_t base = 0;  // address of the source's element 0
  unsigned long long* word = nullptr;
};

// `e`'s guard over `words` in *eg, or null when `e` is not checked.
WC_HOST_DEVICE WC_FORCE_INLINE const EntryGuard* GuardOf(const CopyEntry& e,
                                                          unsigned long long* words,
                                                          EntryGuard* eg) {
  if (words == nullptr || e.guard_type == 0) return nullptr;
  eg->lanes = LanesOf(static_cast<GuardType>(e.guard_type));
  eg->base = e.guard_base;
  eg->word = words + e.guard_slot;
  return eg;
}

template <typename T>
WC_HOST_DEVICE WC_FORCE_INLINE T LoadReadOnly(const T* p) {
#ifdef __CUDA_ARCH__
  return __ldg(p);
#else
  return *p;
#endif
}

// Checks the elements in [p, p + bytes) (p at an element) on this thread.
WC_HOST_DEVICE WC_NOINLINE inline void GuardElements(const EntryGuard& g, const uint8_t* p,
                                                     uint64_t bytes) {
  for (uint64_t k = 0; k < bytes; k += g.lanes.bytes) {
    const FiniteClass c = ClassifyElement(LoadElementBits(p + k, g.lanes.bytes), g.lanes);
    if (c == FiniteClass::kFinite) continue;
    const uint64_t index = (reinterpret_cast<uint64_t>(p + k) - g.base) / g.lanes.bytes;
    LowerGuardWord(g.word, static_cast<unsigned long long>(EncodeFinding(index, c)));
  }
}

// Thread t of nt checks its share of the elements in [p, p + bytes).
WC_HOST_DEVICE inline void GuardElementsShared(const EntryGuard& g, const uint8_t* p,
                                               uint64_t bytes, unsigned t, unsigned nt) {
  for (uint64_t k = t * uint64_t{g.lanes.bytes}; k < bytes; k += uint64_t{nt} * g.lanes.bytes) {
    GuardElements(g, p + k, g.lanes.bytes);
  }
}

template <typename W>
WC_HOST_DEVICE WC_FORCE_INLINE bool WordIsSuspect(const W& v, const NonFiniteLanes& l) {
  if constexpr (sizeof(W) == 16) {
    return WordHasNonFinite(static_cast<uint64_t>(v.x) | (static_cast<uint64_t>(v.y) << 32), l) ||
           WordHasNonFinite(static_cast<uint64_t>(v.z) | (static_cast<uint64_t>(v.w) << 32), l);
  } else if constexpr (sizeof(W) == 8) {
    return WordHasNonFinite(static_cast<uint64_t>(v.x) | (static_cast<uint64_t>(v.y) << 32), l);
  } else {
    return WordHasNonFinite(static_cast<uint64_t>(v), l);  // zero lanes are finite
  }
}

// Thread t of nt copies its share of `n` bytes with words of type W once
// both pointers are aligned for it: byte head, W body, byte tail. `dst -
// src` is the same mod 16 for the whole run, so the head aligns both.
// With a guard, each word is checked in registers as it is copied (a
// suspect word is resolved element by element); the head and tail bytes,
// and runs whose words do not line up with whole elements, are checked
// element by element.
template <typename W>
WC_HOST_DEVICE WC_FORCE_INLINE void CopyWords(uint8_t* __restrict__ dst,
                                              const uint8_t* __restrict__ src, uint64_t n,
                                              unsigned t, unsigned nt, const EntryGuard* g) {
  const uint64_t mis = (sizeof(W) - (reinterpret_cast<uintptr_t>(src) & (sizeof(W) - 1))) &
                       (sizeof(W) - 1);
  const uint64_t head = mis < n ? mis : n;
  for (uint64_t i = t; i < head; i += nt) dst[i] = src[i];
  const uint64_t words = (n - head) / sizeof(W);
  const W* s = reinterpret_cast<const W*>(src + head);
  W* d = reinterpret_cast<W*>(dst + head);
  if (g == nullptr) {
    for (uint64_t i = t; i < words; i += nt) d[i] = LoadReadOnly(s + i);
  } else {
    const bool lanes_line_up = sizeof(W) >= g->lanes.bytes && g->base % g->lanes.bytes == 0 &&
                               (reinterpret_cast<uint64_t>(src) - g->base) % g->lanes.bytes == 0;
    for (uint64_t i = t; i < words; i += nt) {
      const W v = LoadReadOnly(s + i);
      d[i] = v;
      if (lanes_line_up && WordIsSuspect(v, g->lanes)) [[unlikely]] {
        GuardElements(*g, reinterpret_cast<const uint8_t*>(s + i), sizeof(W));
      }
    }
    if (lanes_line_up) {
      GuardElementsShared(*g, src, head, t, nt);
      GuardElementsShared(*g, src + head + words * sizeof(W), n - head - words * sizeof(W), t, nt);
    } else {
      GuardElementsShared(*g, src, n, t, nt);
    }
  }
  for (uint64_t i = head + words * sizeof(W) + t; i < n; i += nt) dst[i] = src[i];
}

// Thread t of nt copies its share of `n` contiguous bytes, with the widest
// access the two addresses' alignment allows (16 bytes where they agree mod
// 16, down to 1).
WC_HOST_DEVICE inline void CopyBytes(uint8_t* dst, const uint8_t* src, uint64_t n, unsigned t,
                                     unsigned nt, const EntryGuard* g) {
  const uintptr_t diff = reinterpret_cast<uintptr_t>(src) ^ reinterpret_cast<uintptr_t>(dst);
  if ((diff & 15) == 0) {
    CopyWords<uint4>(dst, src, n, t, nt, g);
  } else if ((diff & 7) == 0) {
    CopyWords<uint2>(dst, src, n, t, nt, g);
  } else if ((diff & 3) == 0) {
    CopyWords<uint32_t>(dst, src, n, t, nt, g);
  } else if ((diff & 1) == 0) {
    CopyWords<uint16_t>(dst, src, n, t, nt, g);
  } else {
    CopyWords<uint8_t>(dst, src, n, t, nt, g);
  }
}

// Thread t's part of row tile `tile` of the plain entry `e` (RowTilingOf):
// a piece of one long row with the whole block, or short rows, a team of
// lanes to a row (a team never spans two warps, so its rows' branches are
// the warp's).
WC_HOST_DEVICE inline void CopyRowTileThread(const CopyEntry& e, uint64_t tile, unsigned t,
                                             const EntryGuard* g) {
  const RowTiling k = RowTilingOf(e);
  const uint64_t row_bytes = e.cols * e.elem_size;
  // Rows [r, end) step `step`, bytes [b0, b0 + n) of each, this thread
  // being `lane` of `lanes`: one call site, so the copy is inlined once.
  uint64_t r, end, step, b0, n;
  unsigned lane, lanes;
  if (k.tiles_per_row > 0) {
    r = tile / k.tiles_per_row;
    end = r + 1;
    step = 1;
    b0 = (tile % k.tiles_per_row) * kCopyTileBytes;
    n = row_bytes - b0 < kCopyTileBytes ? row_bytes - b0 : kCopyTileBytes;
    lane = t;
    lanes = kCopyThreads;
  } else {
    lanes = static_cast<unsigned>(k.lanes);
    lane = t % lanes;
    step = kCopyThreads / lanes;  // teams
    const uint64_t r0 = tile * k.rows_per_tile;
    r = r0 + t / lanes;
    end = e.rows - r0 < k.rows_per_tile ? e.rows : r0 + k.rows_per_tile;
    b0 = 0;
    n = row_bytes;
  }
  const auto* src = reinterpret_cast<const uint8_t*>(e.src) + b0;
  auto* dst = reinterpret_cast<uint8_t*>(e.dst) + b0;
  for (; r < end; r += step) {
    CopyBytes(dst + r * e.dst_row_stride, src + r * e.src_row_stride, n, lane, lanes, g);
  }
}

// The transposed tile `tile` of `e` in two halves around a barrier: rows
// r0.. of the source read into `smem` (coalesced along c), then written as
// rows of the destination (source columns, coalesced along r).
template <typename T>
WC_HOST_DEVICE inline void TransposeLoadThread(const CopyEntry& e, uint64_t tile, unsigned t,
                                               T (*smem)[kTransposeTile + 1],
                                               const EntryGuard* g) {
  const uint64_t col_tiles = (e.cols + kTransposeTile - 1) / kTransposeTile;
  const uint64_t r0 = (tile / col_tiles) * kTransposeTile;
  const uint64_t c0 = (tile % col_tiles) * kTransposeTile;
  const auto* src = reinterpret_cast<const uint8_t*>(e.src);
  for (uint64_t i = t; i < kTransposeTile * kTransposeTile; i += kCopyThreads) {
    const uint64_t rr = i / kTransposeTile, cc = i % kTransposeTile;
    if (r0 + rr < e.rows && c0 + cc < e.cols) {
      const uint8_t* at = src + (r0 + rr) * e.src_row_stride + (c0 + cc) * sizeof(T);
      const T v = *reinterpret_cast<const T*>(at);
      smem[rr][cc] = v;
      if (g != nullptr) {
        const FiniteClass c = ClassifyElement(static_cast<uint64_t>(v), g->lanes);
        if (c != FiniteClass::kFinite) [[unlikely]] {
          const uint64_t index = (reinterpret_cast<uint64_t>(at) - g->base) / sizeof(T);
          LowerGuardWord(g->word, static_cast<unsigned long long>(EncodeFinding(index, c)));
        }
      }
    }
  }
}

template <typename T>
WC_HOST_DEVICE inline void TransposeStoreThread(const CopyEntry& e, uint64_t tile, unsigned t,
                                                const T (*smem)[kTransposeTile + 1]) {
  const uint64_t col_tiles = (e.cols + kTransposeTile - 1) / kTransposeTile;
  const uint64_t r0 = (tile / col_tiles) * kTransposeTile;
  const uint64_t c0 = (tile % col_tiles) * kTransposeTile;
  auto* dst = reinterpret_cast<uint8_t*>(e.dst);
  for (uint64_t i = t; i < kTransposeTile * kTransposeTile; i += kCopyThreads) {
    const uint64_t cc = i / kTransposeTile, rr = i % kTransposeTile;
    if (r0 + rr < e.rows && c0 + cc < e.cols) {
      *reinterpret_cast<T*>(dst + (c0 + cc) * e.dst_row_stride + (r0 + rr) * sizeof(T)) =
          smem[rr][cc];
    }
  }
}

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_COPY_KERNEL_H_
