#include "kernels/pack_cuda.h"

#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/finite_bits.h"

namespace weightcast {
namespace {

constexpr int kThreads = 256;

// The non-finite guard of one entry (copy_table.h).
struct EntryGuard {
  NonFiniteLanes lanes;
  uint64_t base = 0;  // address of the source's element 0
  unsigned long long* word = nullptr;
};

// Checks the elements in [p, p + bytes) (p at an element) on this thread.
__device__ __noinline__ void GuardElements(const EntryGuard& g, const uint8_t* p, uint64_t bytes) {
  for (uint64_t k = 0; k < bytes; k += g.lanes.bytes) {
    const FiniteClass c = ClassifyElement(LoadElementBits(p + k, g.lanes.bytes), g.lanes);
    if (c == FiniteClass::kFinite) continue;
    const uint64_t index = (reinterpret_cast<uint64_t>(p + k) - g.base) / g.lanes.bytes;
    atomicMin(g.word, static_cast<unsigned long long>(EncodeFinding(index, c)));
  }
}

// Checks the elements in [p, p + bytes) with the whole block.
__device__ void GuardElementsByBlock(const EntryGuard& g, const uint8_t* p, uint64_t bytes) {
  for (uint64_t k = threadIdx.x * uint64_t{g.lanes.bytes}; k < bytes;
       k += uint64_t{blockDim.x} * g.lanes.bytes) {
    GuardElements(g, p + k, g.lanes.bytes);
  }
}

template <typename W>
__device__ __forceinline__ bool WordIsSuspect(const W& v, const NonFiniteLanes& l) {
  if constexpr (sizeof(W) == 16) {
    return WordHasNonFinite(static_cast<uint64_t>(v.x) | (static_cast<uint64_t>(v.y) << 32), l) ||
           WordHasNonFinite(static_cast<uint64_t>(v.z) | (static_cast<uint64_t>(v.w) << 32), l);
  } else if constexpr (sizeof(W) == 8) {
    return WordHasNonFinite(static_cast<uint64_t>(v.x) | (static_cast<uint64_t>(v.y) << 32), l);
  } else {
    return WordHasNonFinite(static_cast<uint64_t>(v), l);  // zero lanes are finite
  }
}

// Copies `n` bytes with words of type W once both pointers are aligned for it:
// byte head, W body, byte tail. `shift` (dst - src mod 16) is the same for
// the whole row, so the head length aligns both.
// With a guard, each word is checked in registers as it is copied (a
// suspect word is resolved element by element); the head and tail bytes, and
// rows whose words do not line up with whole elements, are checked element
// by element.
template <typename W>
__device__ __forceinline__ void CopyRowBytes(uint8_t* __restrict__ dst,
                                             const uint8_t* __restrict__ src, uint64_t n,
                                             const EntryGuard* g) {
  const uint64_t mis = (sizeof(W) - (reinterpret_cast<uintptr_t>(src) & (sizeof(W) - 1))) &
                       (sizeof(W) - 1);
  const uint64_t head = mis < n ? mis : n;
  for (uint64_t i = threadIdx.x; i < head; i += blockDim.x) dst[i] = src[i];
  const uint64_t words = (n - head) / sizeof(W);
  const W* s = reinterpret_cast<const W*>(src + head);
  W* d = reinterpret_cast<W*>(dst + head);
  if (g == nullptr) {
    for (uint64_t i = threadIdx.x; i < words; i += blockDim.x) d[i] = __ldg(s + i);
  } else {
    const bool lanes_line_up = sizeof(W) >= g->lanes.bytes && g->base % g->lanes.bytes == 0 &&
                               (reinterpret_cast<uint64_t>(src) - g->base) % g->lanes.bytes == 0;
    for (uint64_t i = threadIdx.x; i < words; i += blockDim.x) {
      const W v = __ldg(s + i);
      d[i] = v;
      if (lanes_line_up && WordIsSuspect(v, g->lanes)) [[unlikely]] {
        GuardElements(*g, reinterpret_cast<const uint8_t*>(s + i), sizeof(W));
      }
    }
    if (lanes_line_up) {
      GuardElementsByBlock(*g, src, head);
      GuardElementsByBlock(*g, src + head + words * sizeof(W), n - head - words * sizeof(W));
    } else {
      GuardElementsByBlock(*g, src, n);
    }
  }
  for (uint64_t i = head + words * sizeof(W) + threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}

__device__ void CopyRowTile(const CopyEntry& e, uint64_t tile, const EntryGuard* g) {
  const uint64_t row_bytes = e.cols * e.elem_size;
  const uint64_t per_row = (row_bytes + kCopyTileBytes - 1) / kCopyTileBytes;
  const uint64_t r = tile / per_row;
  const uint64_t b0 = (tile % per_row) * kCopyTileBytes;
  const uint64_t n = row_bytes - b0 < kCopyTileBytes ? row_bytes - b0 : kCopyTileBytes;
  const uint8_t* src = reinterpret_cast<const uint8_t*>(e.src) + r * e.src_row_stride + b0;
  uint8_t* dst = reinterpret_cast<uint8_t*>(e.dst) + r * e.dst_row_stride + b0;
  const uintptr_t diff = reinterpret_cast<uintptr_t>(src) ^ reinterpret_cast<uintptr_t>(dst);
  if ((diff & 15) == 0) {
    CopyRowBytes<uint4>(dst, src, n, g);
  } else if ((diff & 7) == 0) {
    CopyRowBytes<uint2>(dst, src, n, g);
  } else if ((diff & 3) == 0) {
    CopyRowBytes<uint32_t>(dst, src, n, g);
  } else if ((diff & 1) == 0) {
    CopyRowBytes<uint16_t>(dst, src, n, g);
  } else {
    CopyRowBytes<uint8_t>(dst, src, n, g);
  }
}

template <typename T>
__device__ void TransposeTile(const CopyEntry& e, uint64_t tile, T (*smem)[kTransposeTile + 1],
                              const EntryGuard* g) {
  const uint64_t col_tiles = (e.cols + kTransposeTile - 1) / kTransposeTile;
  const uint64_t r0 = (tile / col_tiles) * kTransposeTile;
  const uint64_t c0 = (tile % col_tiles) * kTransposeTile;
  const uint8_t* src = reinterpret_cast<const uint8_t*>(e.src);
  uint8_t* dst = reinterpret_cast<uint8_t*>(e.dst);
  // Read rows r0.., coalesced along c; write rows of the destination
  // (source columns), coalesced along r.
  for (unsigned i = threadIdx.x; i < kTransposeTile * kTransposeTile; i += blockDim.x) {
    const uint64_t rr = i / kTransposeTile, cc = i % kTransposeTile;
    if (r0 + rr < e.rows && c0 + cc < e.cols) {
      const uint8_t* at = src + (r0 + rr) * e.src_row_stride + (c0 + cc) * sizeof(T);
      const T v = *reinterpret_cast<const T*>(at);
      smem[rr][cc] = v;
      if (g != nullptr) {
        const FiniteClass c = ClassifyElement(static_cast<uint64_t>(v), g->lanes);
        if (c != FiniteClass::kFinite) [[unlikely]] {
          const uint64_t index = (reinterpret_cast<uint64_t>(at) - g->base) / sizeof(T);
          atomicMin(g->word, static_cast<unsigned long long>(EncodeFinding(index, c)));
        }
      }
    }
  }
  __syncthreads();
  for (unsigned i = threadIdx.x; i < kTransposeTile * kTransposeTile; i += blockDim.x) {
    const uint64_t cc = i / kTransposeTile, rr = i % kTransposeTile;
    if (r0 + rr < e.rows && c0 + cc < e.cols) {
      *reinterpret_cast<T*>(dst + (c0 + cc) * e.dst_row_stride + (r0 + rr) * sizeof(T)) =
          smem[rr][cc];
    }
  }
  __syncthreads();
}

// kGuard: the non-finite guard is compiled in only where a launch asks for
// it, so unguarded copies (receivers, allow_non_finite) keep their registers.
template <bool kGuard>
__global__ void __launch_bounds__(kThreads)
    CopyTableKernel(const CopyEntry* __restrict__ entries, const uint64_t* __restrict__ tile_end,
                    uint32_t n, uint64_t total_tiles, unsigned long long* guard) {
  __shared__ uint64_t smem[kTransposeTile * (kTransposeTile + 1)];
  for (uint64_t tile = blockIdx.x; tile < total_tiles; tile += gridDim.x) {
    // First entry whose running tile count exceeds `tile`.
    uint32_t lo = 0, hi = n - 1;
    while (lo < hi) {
      const uint32_t mid = (lo + hi) / 2;
      if (tile_end[mid] > tile) hi = mid; else lo = mid + 1;
    }
    const CopyEntry e = entries[lo];
    const uint64_t local = tile - (lo == 0 ? 0 : tile_end[lo - 1]);
    EntryGuard eg;
    const EntryGuard* g = nullptr;
    if (kGuard && e.guard_type != 0) {
      eg = EntryGuard{.lanes = LanesOf(static_cast<GuardType>(e.guard_type)),
                      .base = e.guard_base,
                      .word = guard + e.guard_slot};
      g = &eg;
    }
    if (e.transpose == 0) {
      CopyRowTile(e, local, g);
      continue;
    }
    // Element-wise transposes: unaligned element addresses are legal only
    // when they are aligned to the element size, which typed tensors are.
    switch (e.elem_size) {
      case 1: TransposeTile<uint8_t>(e, local, reinterpret_cast<uint8_t (*)[kTransposeTile + 1]>(smem), g); break;
      case 2: TransposeTile<uint16_t>(e, local, reinterpret_cast<uint16_t (*)[kTransposeTile + 1]>(smem), g); break;
      case 4: TransposeTile<uint32_t>(e, local, reinterpret_cast<uint32_t (*)[kTransposeTile + 1]>(smem), g); break;
      default: TransposeTile<uint64_t>(e, local, reinterpret_cast<uint64_t (*)[kTransposeTile + 1]>(smem), g); break;
    }
  }
}

}  // namespace

cudaError_t LaunchCopyTable(const CopyEntry* entries, size_t n, void* scratch,
                            cudaStream_t stream, unsigned long long* guard) {
  if (n == 0) return cudaSuccess;
  if (entries == nullptr || scratch == nullptr || n > 0xFFFFFFFFu) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(scratch) % 8 != 0) return cudaErrorInvalidValue;
  // One host staging buffer: entries then running tile counts.
  std::vector<uint8_t> staging(CopyTableScratchBytes(n));
  auto* tile_end = reinterpret_cast<uint64_t*>(staging.data() + n * sizeof(CopyEntry));
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    const CopyEntry& e = entries[i];
    if (e.elem_size != 1 && e.elem_size != 2 && e.elem_size != 4 && e.elem_size != 8) {
      return cudaErrorInvalidValue;
    }
    const uint64_t tiles = TilesOf(e);
    if (tiles > 0 && (e.src == 0 || e.dst == 0)) return cudaErrorInvalidValue;
    if (e.transpose != 0 && ((e.src | e.dst | e.src_row_stride | e.dst_row_stride) % e.elem_size) != 0) {
      return cudaErrorInvalidValue;  // transposes move whole aligned elements
    }
    if (guard != nullptr && e.guard_type != 0 &&
        (LanesOf(static_cast<GuardType>(e.guard_type)).bytes != e.elem_size ||
         (tiles > 0 && e.src < e.guard_base))) {
      return cudaErrorInvalidValue;  // the guard reads whole elements of its source
    }
    total += tiles;
    tile_end[i] = total;
  }
  if (total == 0) return cudaSuccess;
  memcpy(staging.data(), entries, n * sizeof(CopyEntry));
  WC_CUDA_RETURN(cudaMemcpyAsync(scratch, staging.data(), staging.size(), cudaMemcpyHostToDevice,
                                 stream));
  int device = 0, sms = 0;
  WC_CUDA_RETURN(cudaGetDevice(&device));
  WC_CUDA_RETURN(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const uint64_t cap = static_cast<uint64_t>(sms) * 8;
  const unsigned grid = static_cast<unsigned>(total < cap ? total : cap);
  const auto* d_entries = static_cast<const CopyEntry*>(scratch);
  const auto* d_tile_end =
      reinterpret_cast<const uint64_t*>(static_cast<uint8_t*>(scratch) + n * sizeof(CopyEntry));
  if (guard != nullptr) {
    CopyTableKernel<true><<<grid, kThreads, 0, stream>>>(d_entries, d_tile_end,
                                                         static_cast<uint32_t>(n), total, guard);
  } else {
    CopyTableKernel<false><<<grid, kThreads, 0, stream>>>(d_entries, d_tile_end,
                                                          static_cast<uint32_t>(n), total, nullptr);
  }
  return cudaGetLastError();
}

}  // namespace weightcast
