#include "kernels/pack_cuda.h"

#include <cstring>
#include <vector>

#include "kernels/copy_kernel.h"
#include "kernels/cuda_check.h"
#include "kernels/grid_stride.h"

namespace weightcast {
namespace {

template <typename T>
__device__ void TransposeTile(const CopyEntry& e, uint64_t tile, uint64_t* smem,
                              const EntryGuard* g) {
  auto* tile_smem = reinterpret_cast<T (*)[kTransposeTile + 1]>(smem);
  TransposeLoadThread<T>(e, tile, threadIdx.x, tile_smem, g);
  __syncthreads();
  TransposeStoreThread<T>(e, tile, threadIdx.x, tile_smem);
  __syncthreads();
}

// Each block takes tiles in grid-stride order; a tile's work, thread by
// thread, is kernels/copy_kernel.h's. kGuard: the non-finite guard is
// compiled in only where a launch asks for it, so unguarded copies
// (receivers, allow_non_finite) keep their registers: the unguarded kernel
// is held to 8 blocks an SM (32 registers, no spill with CUDA 13.0's
// ptxas; unbounded it takes 64 and spills), full occupancy for a copy
// that is all memory latency. The guarded one is held to 3 (80 registers,
// a 4-byte spill; unbounded 90, and at 4 blocks the guard's state spills
// in the copy loop). kernels_bench prints what each costs.
template <bool kGuard>
__global__ void __launch_bounds__(kCopyThreads, kGuard ? 3 : 8)
    CopyTableKernel(const CopyEntry* __restrict__ entries, const uint64_t* __restrict__ tile_end,
                    uint32_t n, uint64_t total_tiles, unsigned long long* guard) {
  __shared__ uint64_t smem[kTransposeTile * (kTransposeTile + 1)];
  for (uint64_t tile = blockIdx.x; tile < total_tiles; tile += gridDim.x) {
    const uint32_t i = IndexOfRun(tile_end, n, tile);
    const CopyEntry e = entries[i];
    const uint64_t local = tile - (i == 0 ? 0 : tile_end[i - 1]);
    EntryGuard eg;
    const EntryGuard* g = kGuard ? GuardOf(e, guard, &eg) : nullptr;
    if (e.transpose == 0) {
      CopyRowTileThread(e, local, threadIdx.x, g);
      continue;
    }
    // Element-wise transposes: unaligned element addresses are legal only
    // when they are aligned to the element size, which typed tensors are.
    switch (e.elem_size) {
      case 1: TransposeTile<uint8_t>(e, local, smem, g); break;
      case 2: TransposeTile<uint16_t>(e, local, smem, g); break;
      case 4: TransposeTile<uint32_t>(e, local, smem, g); break;
      default: TransposeTile<uint64_t>(e, local, smem, g); break;
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
  if (!IndexCopyTable(entries, n, guard != nullptr, tile_end, &total)) {
    return cudaErrorInvalidValue;
  }
  if (total == 0) return cudaSuccess;
  std::memcpy(staging.data(), entries, n * sizeof(CopyEntry));
  WC_CUDA_RETURN(cudaMemcpyAsync(scratch, staging.data(), staging.size(), cudaMemcpyHostToDevice,
                                 stream));
  unsigned grid = 0;
  WC_CUDA_RETURN(GridStrideBlocks(total, 8, &grid));
  const auto* d_entries = static_cast<const CopyEntry*>(scratch);
  const auto* d_tile_end =
      reinterpret_cast<const uint64_t*>(static_cast<uint8_t*>(scratch) + n * sizeof(CopyEntry));
  if (guard != nullptr) {
    CopyTableKernel<true><<<grid, kCopyThreads, 0, stream>>>(
        d_entries, d_tile_end, static_cast<uint32_t>(n), total, guard);
  } else {
    CopyTableKernel<false><<<grid, kCopyThreads, 0, stream>>>(
        d_entries, d_tile_end, static_cast<uint32_t>(n), total, nullptr);
  }
  return cudaGetLastError();
}

}  // namespace weightcast
