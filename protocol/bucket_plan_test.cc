#include "protocol/bucket_plan.h"

#include <random>

#include "gtest/gtest.h"

namespace weightcast {
namespace {

OutputTensor Plain(const std::string& name, int64_t elems, DType dtype = DType::kBF16) {
  return CopyOf(TensorSpec{name, dtype, {elems}}, 0);
}

OutputTensor Fp8Weight(const std::string& name, uint64_t batch, uint64_t rows, uint64_t cols) {
  OutputTensor out;
  out.spec = TensorSpec{name, DType::kF8E4M3,
                        {static_cast<int64_t>(batch), static_cast<int64_t>(rows),
                         static_cast<int64_t>(cols)}};
  out.source_dtype = DType::kBF16;
  out.quant = QuantKind::kFp8Weight;
  out.q_batch = batch;
  out.q_rows = rows;
  out.q_cols = cols;
  return out;
}

// Checks every invariant the receivers rely on.
void ExpectValidPlan(const std::vector<OutputTensor>& tensors, const BucketPlan& plan,
                     uint64_t bucket_bytes, uint32_t first) {
  ASSERT_EQ(plan.tensor_segments.size(), tensors.size());
  for (size_t b = 0; b < plan.buckets.size(); ++b) {
    const Bucket& bucket = plan.buckets[b];
    EXPECT_EQ(bucket.index, first + b);
    EXPECT_LE(bucket.bytes, bucket_bytes);
    EXPECT_FALSE(bucket.segments.empty());
    uint64_t end = 0;
    for (const Segment& s : bucket.segments) {
      EXPECT_EQ(s.bucket, bucket.index);
      EXPECT_EQ(s.bucket_offset % kSegmentAlignment, 0u);
      EXPECT_GE(s.bucket_offset, end) << "overlap in bucket " << b;
      end = s.bucket_offset + s.bytes;
    }
    EXPECT_EQ(end, bucket.bytes);
  }
  uint64_t payload = 0;
  for (size_t t = 0; t < tensors.size(); ++t) {
    uint64_t covered = 0;
    const uint64_t unit = tensors[t].SplitUnitBytes();
    for (const Segment& s : plan.tensor_segments[t]) {
      EXPECT_EQ(s.tensor, t);
      EXPECT_EQ(s.tensor_offset, covered);
      EXPECT_EQ(s.tensor_offset % unit, 0u) << tensors[t].spec.name;
      covered += s.bytes;
    }
    EXPECT_EQ(covered, tensors[t].spec.ByteSize()) << tensors[t].spec.name;
    payload += covered;
  }
  EXPECT_EQ(plan.payload_bytes, payload);
}

TEST(BucketPlanTest, PacksSmallTensorsTogetherAligned) {
  std::vector<OutputTensor> t = {Plain("a", 3), Plain("b", 5), Plain("c", 7)};
  auto plan = PlanBuckets(t, 4096, 0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->buckets.size(), 1u);
  EXPECT_EQ(plan->buckets[0].segments[1].bucket_offset, 256u);
  EXPECT_EQ(plan->buckets[0].segments[2].bucket_offset, 512u);
  EXPECT_EQ(plan->buckets[0].bytes, 512u + 14u);
  ExpectValidPlan(t, *plan, 4096, 0);
}

TEST(BucketPlanTest, SplitsLargeTensorAcrossBuckets) {
  std::vector<OutputTensor> t = {Plain("small", 10), Plain("big", 10000)};  // 20000 bytes
  auto plan = PlanBuckets(t, 8192, 5);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectValidPlan(t, *plan, 8192, 5);
  // The big tensor starts in the first bucket after the small one.
  EXPECT_EQ(plan->tensor_segments[1].front().bucket, 5u);
  EXPECT_EQ(plan->tensor_segments[1].front().bucket_offset, 256u);
  EXPECT_EQ(plan->buckets.size(), 3u);
}

TEST(BucketPlanTest, Fp8SplitsOnlyAtBands) {
  // 2 experts of [256, 100]: bands of 128 rows = 12800 bytes.
  std::vector<OutputTensor> t = {Plain("x", 1000), Fp8Weight("w", 2, 256, 100)};
  auto plan = PlanBuckets(t, 30000, 0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectValidPlan(t, *plan, 30000, 0);
  // Rows not a multiple of 128: whole matrices only; 100 x 200 = 20000 bytes.
  std::vector<OutputTensor> u = {Fp8Weight("w", 3, 100, 200)};
  plan = PlanBuckets(u, 30000, 0);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->buckets.size(), 3u);
  ExpectValidPlan(u, *plan, 30000, 0);
  // A unit larger than a bucket is refused, naming the tensor.
  auto bad = PlanBuckets(u, 10000, 0);
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("'w'"), std::string::npos);
}

TEST(BucketPlanTest, RejectsBucketSizeOutOfRange) {
  std::vector<OutputTensor> t = {Plain("a", 3)};
  EXPECT_EQ(PlanBuckets(t, 100, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanBuckets(t, kMaxBucketBytes + 1, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BucketPlanTest, EmptyTensorsGetNoSegmentAndEmptyInputNoBucket) {
  std::vector<OutputTensor> t = {Plain("e", 0)};
  auto plan = PlanBuckets(t, 4096, 0);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->buckets.empty());
  EXPECT_TRUE(plan->tensor_segments[0].empty());
}

TEST(BucketPlanTest, RandomInputsKeepInvariantsAndAreDeterministic) {
  std::mt19937_64 rng(42);
  for (int iter = 0; iter < 300; ++iter) {
    std::vector<OutputTensor> t;
    const int n = 1 + rng() % 40;
    for (int i = 0; i < n; ++i) {
      const DType dt = (rng() % 2) ? DType::kBF16 : DType::kF32;
      t.push_back(Plain("t" + std::to_string(i), rng() % 50000, dt));
    }
    const uint64_t bucket = kMinBucketBytes + rng() % 100000;
    auto a = PlanBuckets(t, bucket, 0);
    auto b = PlanBuckets(t, bucket, 0);
    ASSERT_TRUE(a.ok()) << a.status();
    ExpectValidPlan(t, *a, bucket, 0);
    ASSERT_EQ(a->buckets.size(), b->buckets.size());
    for (size_t i = 0; i < a->buckets.size(); ++i) {
      EXPECT_EQ(a->buckets[i].segments, b->buckets[i].segments);
    }
  }
}

}  // namespace
}  // namespace weightcast
