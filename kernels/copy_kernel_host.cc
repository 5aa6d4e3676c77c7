#include "kernels/copy_kernel_host.h"

#include <cstdint>
#include <vector>

#include "kernels/copy_kernel.h"

namespace weightcast {
namespace {

template <typename T>
void TransposeTileOnHost(const CopyEntry& e, uint64_t tile, uint64_t* smem, const EntryGuard* g) {
  auto* tile_smem = reinterpret_cast<T (*)[kTransposeTile + 1]>(smem);
  // The kernel's __syncthreads between the halves: every thread loads, then
  // every thread stores.
  for (unsigned t = 0; t < kCopyThreads; ++t) TransposeLoadThread<T>(e, tile, t, tile_smem, g);
  for (unsigned t = 0; t < kCopyThreads; ++t) TransposeStoreThread<T>(e, tile, t, tile_smem);
}

}  // namespace

bool RunCopyKernelOnHost(const CopyEntry* entries, size_t n, unsigned long long* guard) {
  if (n == 0) return true;
  if (entries == nullptr || n > 0xFFFFFFFFu) return false;
  std::vector<uint64_t> tile_end(n);
  uint64_t total = 0;
  if (!IndexCopyTable(entries, n, guard != nullptr, tile_end.data(), &total)) return false;
  std::vector<uint64_t> smem(kTransposeTile * (kTransposeTile + 1));
  for (uint64_t tile = 0; tile < total; ++tile) {
    const uint32_t i = IndexOfRun(tile_end.data(), static_cast<uint32_t>(n), tile);
    const CopyEntry& e = entries[i];
    const uint64_t local = tile - (i == 0 ? 0 : tile_end[i - 1]);
    EntryGuard eg;
    const EntryGuard* g = GuardOf(e, guard, &eg);
    if (e.transpose == 0) {
      for (unsigned t = 0; t < kCopyThreads; ++t) CopyRowTileThread(e, local, t, g);
      continue;
    }
    switch (e.elem_size) {
      case 1: TransposeTileOnHost<uint8_t>(e, local, smem.data(), g); break;
      case 2: TransposeTileOnHost<uint16_t>(e, local, smem.data(), g); break;
      case 4: TransposeTileOnHost<uint32_t>(e, local, smem.data(), g); break;
      default: TransposeTileOnHost<uint64_t>(e, local, smem.data(), g); break;
    }
  }
  return true;
}

}  // namespace weightcast
