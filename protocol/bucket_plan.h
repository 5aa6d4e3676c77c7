// BucketPlan: how one sender's output tensors are cut into buckets.
//
// A pure function of (outputs, bucket_bytes, first_bucket): every rank that
// runs it on the same input gets the same plan. Tensors are taken in order;
// each segment starts at a kSegmentAlignment-aligned bucket offset (so GPU
// pack/unpack can use vector loads); a tensor that does not fit in the space
// left is split at multiples of its SplitUnitBytes() (FP8 outputs only at
// whole 128-row bands or matrices). A split unit larger than bucket_bytes is
// INVALID_ARGUMENT naming the tensor.
#ifndef WEIGHTCAST_PROTOCOL_BUCKET_PLAN_H_
#define WEIGHTCAST_PROTOCOL_BUCKET_PLAN_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/output_tensor.h"

namespace weightcast {

inline constexpr uint64_t kSegmentAlignment = 256;
inline constexpr uint64_t kMinBucketBytes = 4096;
inline constexpr uint64_t kMaxBucketBytes = uint64_t{16} << 30;

// A contiguous byte range of one tensor inside one bucket.
struct Segment {
  uint32_t tensor = 0;         // index into the sender's tensor list
  uint32_t bucket = 0;         // global bucket index
  uint64_t bucket_offset = 0;  // bytes from the bucket start
  uint64_t tensor_offset = 0;  // bytes from the tensor start
  uint64_t bytes = 0;
  friend bool operator==(const Segment&, const Segment&) = default;
};

struct Bucket {
  uint32_t index = 0;          // global index
  uint64_t bytes = 0;          // payload bytes (aligned segments, no trailer)
  std::vector<Segment> segments;
};

struct BucketPlan {
  std::vector<Bucket> buckets;
  // Per tensor, its segments in tensor order (copies of those in buckets).
  std::vector<std::vector<Segment>> tensor_segments;
  uint64_t payload_bytes = 0;  // sum of tensor bytes (padding not counted)
};

// Plans `tensors` (their spec's byte size and split unit) into buckets of at
// most `bucket_bytes`, numbering them from `first_bucket`. Zero-byte tensors
// get no segment. INVALID_ARGUMENT if bucket_bytes is outside
// [kMinBucketBytes, kMaxBucketBytes] or a split unit exceeds it.
[[nodiscard]] absl::StatusOr<BucketPlan> PlanBuckets(std::span<const OutputTensor> tensors,
                                                     uint64_t bucket_bytes,
                                                     uint32_t first_bucket);

}  // namespace weightcast

#endif  // WEIGHTCAST_PROTOCOL_BUCKET_PLAN_H_
