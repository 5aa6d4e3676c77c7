// PlanHolds: split tensors only, disjoint bytes for tensors held at the same
// time, bytes reused once a tensor's last bucket ended; checked on a
// hand-made manifest with known offsets and on random interleavings of
// several senders' buckets against the live sets bucket by bucket.
#include "receiver/hold_plan.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

// A manifest of u8 tensors of `bytes[t]` bytes whose segments are listed per
// bucket: buckets[g] = tensors with a segment in bucket g, in order.
GlobalManifest Manifest(const std::vector<uint64_t>& bytes,
                        const std::vector<std::vector<uint32_t>>& buckets) {
  GlobalManifest m;
  for (size_t t = 0; t < bytes.size(); ++t) {
    m.tensors.push_back(ManifestTensor{
        .spec = {absl::StrCat("t", t), DType::kU8, {static_cast<int64_t>(bytes[t])}}});
  }
  for (uint32_t g = 0; g < buckets.size(); ++g) {
    m.bucket_segments.emplace_back();
    for (uint32_t t : buckets[g]) m.bucket_segments.back().push_back({t, Segment{.tensor = t}});
  }
  return m;
}

bool All(uint32_t) { return true; }

TEST(HoldPlanTest, OnlySplitTensorsAreHeldAndBytesAreReusedAfterTheirLastBucket) {
  // t0 spans buckets 0-2, t1 is whole in bucket 0, t2 spans 2-3, t3 spans
  // 4-5 (after t0 and t2 are done), t4 has no bytes, t5 spans 3-4.
  const GlobalManifest m =
      Manifest({1000, 64, 300, 700, 0, 10},
               {{0, 1}, {0}, {0, 2}, {2, 5}, {3, 5}, {3}});
  const HoldPlan plan = PlanHolds(m, All);
  EXPECT_EQ(plan.offset[0], 0u);
  EXPECT_FALSE(plan.Holds(1));
  EXPECT_EQ(plan.offset[2], 1024u);  // t0 is still held in bucket 2
  EXPECT_EQ(plan.offset[5], 0u);     // t0 is done after bucket 2
  EXPECT_EQ(plan.offset[3], 256u);   // after t5 [0, 256); t2 is done after bucket 3
  EXPECT_FALSE(plan.Holds(4));
  EXPECT_EQ(plan.arena_bytes, 1536u);
}

TEST(HoldPlanTest, UnwantedTensorsAreNotHeld) {
  const GlobalManifest m = Manifest({1000, 300}, {{0}, {0, 1}, {1}});
  const HoldPlan plan = PlanHolds(m, [](uint32_t t) { return t == 1; });
  EXPECT_FALSE(plan.Holds(0));
  EXPECT_EQ(plan.offset[1], 0u);
  EXPECT_EQ(plan.arena_bytes, 512u);
}

TEST(HoldPlanTest, TensorsHeldAtTheSameTimeNeverShareBytes) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    // Up to 4 senders, each a run of tensors cut into consecutive buckets;
    // the senders' buckets interleave at random in the global order.
    const int senders = 1 + static_cast<int>(rng() % 4);
    std::vector<uint64_t> bytes;
    std::vector<std::vector<std::vector<uint32_t>>> per_sender(senders);
    for (int s = 0; s < senders; ++s) {
      const int tensors = 1 + static_cast<int>(rng() % 12);
      std::vector<uint32_t> current;
      for (int i = 0; i < tensors; ++i) {
        const uint32_t t = static_cast<uint32_t>(bytes.size());
        bytes.push_back(1 + rng() % 5000);
        const int pieces = 1 + static_cast<int>(rng() % 4);
        for (int p = 0; p < pieces; ++p) {
          current.push_back(t);
          if (p + 1 < pieces || rng() % 3 == 0) {  // a bucket ends
            per_sender[s].push_back(current);
            current.clear();
          }
        }
      }
      if (!current.empty()) per_sender[s].push_back(current);
    }
    std::vector<std::vector<uint32_t>> buckets;
    std::vector<size_t> next(senders, 0);
    for (bool any = true; any;) {
      any = false;
      const int s = static_cast<int>(rng() % senders);
      for (int k = 0; k < senders; ++k) {
        const int q = (s + k) % senders;
        if (next[q] < per_sender[q].size()) {
          buckets.push_back(per_sender[q][next[q]++]);
          any = true;
          break;
        }
      }
    }
    const GlobalManifest m = Manifest(bytes, buckets);
    const HoldPlan plan = PlanHolds(m, All);
    // Which tensors are live in each bucket, from the manifest itself.
    std::vector<int> first(bytes.size(), -1), last(bytes.size(), -1), segs(bytes.size(), 0);
    for (int g = 0; g < static_cast<int>(buckets.size()); ++g) {
      for (uint32_t t : buckets[g]) {
        if (first[t] < 0) first[t] = g;
        last[t] = g;
        ++segs[t];
      }
    }
    uint64_t peak = 0;
    for (int g = 0; g < static_cast<int>(buckets.size()); ++g) {
      uint64_t live_bytes = 0;
      std::vector<uint32_t> live;
      for (uint32_t t = 0; t < bytes.size(); ++t) {
        ASSERT_EQ(plan.Holds(t), segs[t] > 1) << "trial " << trial << " tensor " << t;
        if (plan.Holds(t) && first[t] <= g && g <= last[t]) {
          live.push_back(t);
          live_bytes += bytes[t];
          ASSERT_EQ(plan.offset[t] % kHoldAlignment, 0u);
          ASSERT_LE(plan.offset[t] + bytes[t], plan.arena_bytes);
        }
      }
      peak = std::max(peak, live_bytes);
      for (size_t i = 0; i < live.size(); ++i) {
        for (size_t j = i + 1; j < live.size(); ++j) {
          const uint32_t a = live[i], b = live[j];
          const bool disjoint = plan.offset[a] + bytes[a] <= plan.offset[b] ||
                                plan.offset[b] + bytes[b] <= plan.offset[a];
          ASSERT_TRUE(disjoint) << "trial " << trial << ": tensors " << a << " and " << b
                                << " share bytes in bucket " << g;
        }
      }
    }
    EXPECT_GE(plan.arena_bytes, peak);
  }
}

}  // namespace
}  // namespace weightcast
