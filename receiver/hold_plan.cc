#include "receiver/hold_plan.h"

#include <algorithm>

namespace weightcast {

HoldPlan PlanHolds(const GlobalManifest& m, const std::function<bool(uint32_t)>& wanted) {
  HoldPlan plan;
  plan.offset.assign(m.tensors.size(), kNotHeld);
  // Per tensor: the buckets of its first and last segment, and how many.
  struct Span {
    uint32_t first = 0, last = 0, segments = 0;
  };
  std::vector<Span> span(m.tensors.size());
  for (uint32_t g = 0; g < m.bucket_segments.size(); ++g) {
    for (const auto& [t, seg] : m.bucket_segments[g]) {
      if (t >= span.size()) continue;  // the manifest's checks name it
      Span& s = span[t];
      if (s.segments++ == 0) s.first = g;
      s.last = g;
    }
  }
  // Held tensors in the order their first segment arrives.
  std::vector<uint32_t> order;
  for (uint32_t t = 0; t < span.size(); ++t) {
    if (span[t].segments > 1 && m.tensors[t].spec.ByteSize() > 0 && wanted(t)) order.push_back(t);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return span[a].first < span[b].first; });
  struct Live {
    uint64_t begin = 0, end = 0;  // bytes of the arena
    uint32_t last = 0;            // bucket after which it is free
  };
  std::vector<Live> live;  // sorted by begin
  for (uint32_t t : order) {
    const Span& s = span[t];
    std::erase_if(live, [&](const Live& l) { return l.last < s.first; });
    const uint64_t bytes =
        (m.tensors[t].spec.ByteSize() + kHoldAlignment - 1) / kHoldAlignment * kHoldAlignment;
    // The lowest gap between live tensors that fits.
    uint64_t at = 0;
    size_t i = 0;
    for (; i < live.size(); ++i) {
      if (live[i].begin - at >= bytes) break;
      at = std::max(at, live[i].end);
    }
    live.insert(live.begin() + static_cast<ptrdiff_t>(i), Live{at, at + bytes, s.last});
    plan.offset[t] = at;
    plan.arena_bytes = std::max(plan.arena_bytes, at + bytes);
  }
  return plan;
}

}  // namespace weightcast
