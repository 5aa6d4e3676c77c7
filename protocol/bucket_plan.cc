#include "protocol/bucket_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace weightcast {
namespace {

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

absl::StatusOr<BucketPlan> PlanBuckets(std::span<const OutputTensor> tensors,
                                       uint64_t bucket_bytes, uint32_t first_bucket) {
  if (bucket_bytes < kMinBucketBytes || bucket_bytes > kMaxBucketBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bucket_bytes ", bucket_bytes, " outside [", kMinBucketBytes, ", ",
        kMaxBucketBytes, "]"));
  }
  BucketPlan plan;
  plan.tensor_segments.resize(tensors.size());
  Bucket current{.index = first_bucket, .bytes = 0, .segments = {}};
  auto close_bucket = [&] {
    if (current.segments.empty()) return;
    const uint32_t next = current.index + 1;
    plan.buckets.push_back(std::move(current));
    current = Bucket{.index = next, .bytes = 0, .segments = {}};
  };
  for (size_t t = 0; t < tensors.size(); ++t) {
    const OutputTensor& out = tensors[t];
    const uint64_t total = out.spec.ByteSize();
    const uint64_t unit = std::max<uint64_t>(1, out.SplitUnitBytes());
    if (total == 0) continue;
    if (unit > bucket_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", out.spec.name, "' cannot be split below ", unit,
          " bytes, larger than bucket_bytes ", bucket_bytes));
    }
    uint64_t done = 0;
    while (done < total) {
      uint64_t start = AlignUp(current.bytes, kSegmentAlignment);
      uint64_t room = start < bucket_bytes ? bucket_bytes - start : 0;
      const uint64_t left = total - done;
      uint64_t take = left <= room ? left : room / unit * unit;
      if (take == 0) {
        // Not even one split unit fits: start a fresh bucket. A fresh bucket
        // always has room for one unit since unit <= bucket_bytes.
        close_bucket();
        continue;
      }
      Segment seg{.tensor = static_cast<uint32_t>(t),
                  .bucket = current.index,
                  .bucket_offset = start,
                  .tensor_offset = done,
                  .bytes = take};
      current.segments.push_back(seg);
      plan.tensor_segments[t].push_back(seg);
      current.bytes = start + take;
      done += take;
    }
    plan.payload_bytes += total;
  }
  close_bucket();
  return plan;
}

}  // namespace weightcast
