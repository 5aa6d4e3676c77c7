// FiniteGuard: the non-finite weight guard of the CPU packer, and the error
// every packer returns when a source holds NaN or +-inf.
//
// A non-finite weight from a trainer is a bug to stop before it reaches
// inference: while packing, each source element that is copied or quantized
// is checked (kernels/finite_bits.h: a few integer operations per 8 bytes,
// done on the words the copy holds in registers), and the lowest non-finite
// element index of each source is kept. A packer that found one still
// finishes its bucket, then returns NonFiniteValueError for the finding
// Report() picks; the update pipeline keeps the group in step and votes
// against committing the version (sender/update_pipeline.h).
//
// Threading: one guard per packing thread; not thread-safe.
#ifndef WEIGHTCAST_KERNELS_FINITE_GUARD_H_
#define WEIGHTCAST_KERNELS_FINITE_GUARD_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "common/output_tensor.h"
#include "kernels/finite_bits.h"

namespace weightcast {

// The guard's type for `dtype`: kNone for integer and boolean types.
[[nodiscard]] GuardType GuardTypeOf(DType dtype);

// "NaN", "+inf", "-inf" ("finite" for kFinite).
[[nodiscard]] absl::string_view FiniteClassName(FiniteClass c);

// INVALID_ARGUMENT "tensor '<name>': non-finite value (+inf) at element
// <index> ...", marked so that IsNonFiniteValueError recognises it.
[[nodiscard]] absl::Status NonFiniteValueError(absl::string_view tensor, uint64_t index,
                                               FiniteClass c);
// True for a status made by NonFiniteValueError (also after a caller
// prefixed its message, as long as the payload was kept).
[[nodiscard]] bool IsNonFiniteValueError(const absl::Status& status);
// `status` with `prefix` before its message, payloads kept.
[[nodiscard]] absl::Status WithMessagePrefix(const absl::Status& status, absl::string_view prefix);

class FiniteGuard {
 public:
  // Checks `n` contiguous elements of type `type` at `p`, the first of which
  // is element `first_index` of source `source`, recording the lowest
  // non-finite one. kNone: nothing to check.
  void ScanRun(uint32_t source, GuardType type, const std::byte* p, uint64_t first_index,
               uint64_t n);
  // Copies `n` contiguous elements from `src` to `dst` (as memcpy) and
  // checks them in the same pass, as ScanRun would: the guard rides on the
  // loads and stores of the copy, so it costs no extra read of the bytes.
  // `type` is a checked type (not kNone: callers memcpy those).
  void CopyRun(uint32_t source, GuardType type, std::byte* dst, const std::byte* src,
               uint64_t first_index, uint64_t n);
  // Records a finding word (kernels/finite_bits.h) of `source`; kNoFinding
  // is ignored. Keeps the lowest per source.
  void Record(uint32_t source, uint64_t finding);
  // Records every finding of `other` (a guard another thread filled).
  void Merge(const FiniteGuard& other);

  [[nodiscard]] bool found() const { return !findings_.empty(); }
  // The lowest finding of `source`, or kNoFinding.
  [[nodiscard]] uint64_t FindingOf(uint32_t source) const;
  // OK when nothing was found; else NonFiniteValueError for the lowest
  // numbered source with a finding (its lowest index), named by
  // sources[i].spec.name.
  [[nodiscard]] absl::Status Report(std::span<const HostSource> sources) const;
  void Clear() { findings_.clear(); }

 private:
  // (source, finding); few entries, usually none.
  std::vector<std::pair<uint32_t, uint64_t>> findings_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_FINITE_GUARD_H_
