// Pack tables: how a bucket is filled from (and emptied into) device
// tensors. The host turns each OutputTensor byte range placed in a bucket
// into CopyEntry rectangles (BuildPackTable); one kernel launch per bucket
// executes the whole table (kernels/pack_cuda.h). Plain C++: built and
// tested without a GPU (ExecuteCopyTableOnHost interprets a table on the CPU).
#ifndef WEIGHTCAST_KERNELS_PACK_TABLE_H_
#define WEIGHTCAST_KERNELS_PACK_TABLE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "common/output_tensor.h"
#include "kernels/copy_table.h"

namespace weightcast {

// Appends to `table` the entries that write bytes [byte_offset, byte_offset +
// bytes) of `out` (a plain, unquantized output) to `bucket + bucket_offset`.
// `source_addrs[i]` is the address of source i's element 0 (device memory
// for the GPU kernel; any memory for the CPU interpreter). Partial rows at
// the range ends become their own entries, so every entry is a full
// rectangle. INVALID_ARGUMENT (naming the tensor) when the range is outside
// the tensor or not element aligned, or a piece names a missing source;
// UNIMPLEMENTED for FP8 outputs (those go through kernels/fp8_cuda.h).
// `guard_slots[i]`, when given, is the non-finite guard word of source i:
// the entries of floating-point outputs then carry the guard (copy_table.h).
// The most entries BuildPackTable (or BuildPackTableForPiece) appends for
// one piece: a partial row at each end and the whole rows between. What a
// caller sizes a launch's table scratch by before an update runs.
inline constexpr size_t kMaxCopyEntriesPerPiece = 3;

[[nodiscard]] absl::Status BuildPackTable(const OutputTensor& out, uint64_t byte_offset,
                                          uint64_t bytes, std::span<const uint64_t> source_addrs,
                                          uint64_t bucket, uint64_t bucket_offset,
                                          std::vector<CopyEntry>* table,
                                          std::span<const uint32_t> guard_slots = {});

// The receiver's assembly of an output from sources that arrive one by one
// (vLLM's w13 from per-expert gate and up, in whichever buckets they came):
// appends the entries that write every piece of `out` reading `source`
// (whose element 0 is at `source_addr`) to its place in a dense copy of the
// whole output at `dst`. Running it for each of the output's sources, in any
// order, gives BuildPackTable's bytes for the whole output. Errors are
// BuildPackTable's: INVALID_ARGUMENT naming the tensor, and UNIMPLEMENTED for
// FP8 outputs (receivers only move bytes that are already quantized).
[[nodiscard]] absl::Status BuildPackTableForSource(const OutputTensor& out, uint32_t source,
                                                   uint64_t source_addr, uint64_t dst,
                                                   std::vector<CopyEntry>* table);

// The part of BuildPackTableForSource for one piece: piece `piece` of `out`
// (reading the source at `source_addr`), which starts at output element
// `piece_start` (the element count of the pieces before it). For a caller
// that indexes the pieces of each source once, so that assembling an output
// of P pieces costs P, not P per source. INVALID_ARGUMENT for a piece out of
// range; otherwise BuildPackTableForSource's errors.
[[nodiscard]] absl::Status BuildPackTableForPiece(const OutputTensor& out, size_t piece,
                                                  uint64_t piece_start, uint64_t source_addr,
                                                  uint64_t dst, std::vector<CopyEntry>* table);

// The receiver's side: entries copying the bucket bytes back into the
// sources' layout (each entry of BuildPackTable, inverted).
[[nodiscard]] absl::Status BuildUnpackTable(const OutputTensor& out, uint64_t byte_offset,
                                            uint64_t bytes, std::span<const uint64_t> dest_addrs,
                                            uint64_t bucket, uint64_t bucket_offset,
                                            std::vector<CopyEntry>* table);

// Total tiles of a table (the kernel's work items).
[[nodiscard]] uint64_t TotalTiles(std::span<const CopyEntry> table);

// Runs a table on the CPU, with host addresses. The test oracle for the
// kernel's semantics (the guard included: `guard` holds the words the
// entries' guard_slot index, as the kernel's) and for the builder.
void ExecuteCopyTableOnHost(std::span<const CopyEntry> table, uint64_t* guard = nullptr);

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_PACK_TABLE_H_
