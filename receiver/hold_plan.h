// HoldPlan: where a receiver keeps the tensors that arrive split across
// buckets until their last segment is in. The sinks that must see a split
// tensor whole (an assembled vLLM output reads whole sources; a callback
// takes whole tensors) hold it in one arena per sink, laid out from the
// manifest when a version begins, so nothing is allocated while buckets
// arrive: on a GPU, cudaMalloc and cudaFree wait for the device, so an
// allocation on the consume path would make landing bucket k wait for the
// transfer of bucket k+1.
//
//   HoldPlan plan = PlanHolds(manifest, [&](uint32_t t) { return needs_whole(t); });
//   ... arena of plan.arena_bytes (kept across versions while large enough) ...
//   std::byte* at = arena + plan.offset[t];   // t split and wanted
//
// A tensor is held from the bucket of its first segment through the bucket
// of its last (the sink lets it go once that bucket ended); tensors whose
// bucket ranges overlap get disjoint bytes, the others share them (first
// fit in bucket order). Offsets are multiples of kHoldAlignment.
#ifndef WEIGHTCAST_RECEIVER_HOLD_PLAN_H_
#define WEIGHTCAST_RECEIVER_HOLD_PLAN_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "protocol/wire_format.h"

namespace weightcast {

inline constexpr uint64_t kHoldAlignment = 256;
inline constexpr uint64_t kNotHeld = ~uint64_t{0};

struct HoldPlan {
  uint64_t arena_bytes = 0;
  // Manifest tensor index -> its offset in the arena, or kNotHeld (a tensor
  // that arrives in one segment, has no bytes, or was not wanted).
  std::vector<uint64_t> offset;

  [[nodiscard]] bool Holds(uint32_t tensor) const {
    return tensor < offset.size() && offset[tensor] != kNotHeld;
  }
};

// Plans the arena for the tensors of `m` that arrive in more than one
// segment and for which `wanted(tensor index)` is true.
[[nodiscard]] HoldPlan PlanHolds(const GlobalManifest& m,
                                 const std::function<bool(uint32_t)>& wanted);

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_HOLD_PLAN_H_
