#include "protocol/wire_format.h"

#include "gtest/gtest.h"
#include "weightcast/v1/wire.pb.h"

namespace weightcast {
namespace {

std::span<const std::byte> AsBytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

SenderManifest Example(uint32_t rank = 0) {
  std::vector<OutputTensor> outs = {
      CopyOf(TensorSpec{"model.embed_tokens.weight", DType::kBF16, {10, 7}}, 0),
      CopyOf(TensorSpec{"model.norm.weight", DType::kF32, {7}}, 1),
      CopyOf(TensorSpec{"lm_head.weight", DType::kBF16, {10, 700}}, 2)};
  auto plan = PlanBuckets(outs, 8192, 0);
  EXPECT_TRUE(plan.ok());
  return MakeSenderManifest(3, rank, 2, outs, *plan, rank == 0 ? "{\"a\":1}" : "");
}

TEST(WireFormatTest, FrameHeaderRoundTrip) {
  FrameHeader h{.weight_version = 7, .sender_rank = 3, .payload_bytes = 1234,
                .payload_checksum = 0xdeadbeefcafef00dULL};
  auto bytes = EncodeFrameHeader(h);
  auto back = DecodeFrameHeader(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->weight_version, 7u);
  EXPECT_EQ(back->sender_rank, 3u);
  EXPECT_EQ(back->payload_bytes, 1234u);
  EXPECT_EQ(back->payload_checksum, h.payload_checksum);
  bytes[0] = std::byte{0};
  EXPECT_EQ(DecodeFrameHeader(bytes).status().code(), absl::StatusCode::kDataLoss);
  bytes = EncodeFrameHeader(h);
  bytes[4] = std::byte{9};
  EXPECT_EQ(DecodeFrameHeader(bytes).status().code(), absl::StatusCode::kFailedPrecondition);
  h.payload_bytes = kMaxManifestBytes + 1;
  bytes = EncodeFrameHeader(h);
  EXPECT_EQ(DecodeFrameHeader(bytes).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WireFormatTest, TrailerRoundTripAndMagic) {
  std::byte buf[kBucketTrailerBytes];
  EncodeBucketTrailer({.checksum = 1, .weight_version = 2, .bucket_index = 3,
                       .payload_bytes = 4}, buf);
  auto t = DecodeBucketTrailer(buf);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->checksum, 1u);
  EXPECT_EQ(t->weight_version, 2u);
  EXPECT_EQ(t->bucket_index, 3u);
  EXPECT_EQ(t->payload_bytes, 4u);
  buf[21] = std::byte{0};
  EXPECT_EQ(DecodeBucketTrailer(buf).status().code(), absl::StatusCode::kDataLoss);
}

TEST(WireFormatTest, ManifestRoundTrip) {
  SenderManifest m = Example();
  const std::string enc = EncodeSenderManifest(m);
  auto back = DecodeSenderManifest(AsBytes(enc), 3, 0, 2);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->bucket_bytes, m.bucket_bytes);
  ASSERT_EQ(back->tensors.size(), m.tensors.size());
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    EXPECT_EQ(back->tensors[i].spec, m.tensors[i].spec);
    EXPECT_EQ(back->tensors[i].segments, m.tensors[i].segments);
  }
  EXPECT_EQ(back->config_json, "{\"a\":1}");
}

// Re-encodes the example after `mutate` and expects INVALID_ARGUMENT whose
// message contains `needle`.
void ExpectRejected(const std::function<void(v1::wire::SenderManifest&)>& mutate,
                    const std::string& needle) {
  v1::wire::SenderManifest pb;
  ASSERT_TRUE(pb.ParseFromString(EncodeSenderManifest(Example())));
  mutate(pb);
  const std::string enc = pb.SerializeAsString();
  auto r = DecodeSenderManifest(AsBytes(enc), 3, 0, 2);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status();
}

TEST(WireFormatTest, RejectsMalformedManifests) {
  ExpectRejected([](auto& pb) { pb.set_protocol_version(2); }, "protocol");
  ExpectRejected([](auto& pb) { pb.set_weight_version(4); }, "weight version");
  ExpectRejected([](auto& pb) { pb.set_sender_rank(1); }, "claims sender");
  ExpectRejected([](auto& pb) { pb.mutable_tensors(0)->set_dtype(77); }, "dtype");
  ExpectRejected([](auto& pb) { pb.mutable_tensors(1)->set_name(""); }, "empty");
  ExpectRejected([](auto& pb) { pb.mutable_tensors(1)->set_name("lm_head.weight"); },
                 "appears twice");
  ExpectRejected([](auto& pb) { pb.mutable_tensors(0)->set_shape(0, 11); },
                 "model.embed_tokens.weight");
  ExpectRejected([](auto& pb) { pb.mutable_tensors(2)->mutable_segments(0)->set_bucket(9); },
                 "names bucket 9");
  ExpectRejected(
      [](auto& pb) { pb.mutable_tensors(2)->mutable_segments(1)->set_tensor_offset(1); },
      "in order");
  ExpectRejected(
      [](auto& pb) { pb.mutable_tensors(0)->mutable_segments(0)->set_bucket_offset(8190); },
      "leaves bucket");
  ExpectRejected(
      [](auto& pb) { pb.mutable_tensors(1)->mutable_segments(0)->set_bucket_offset(0); },
      "overlap");
  ExpectRejected([](auto& pb) { pb.mutable_buckets(0)->set_bytes(0); }, "invalid size");
  ExpectRejected([](auto& pb) { pb.mutable_tensors(0)->add_shape(-2); }, "negative");
  const std::string junk = "\xff\xff\xff\xff garbage";
  EXPECT_EQ(DecodeSenderManifest(AsBytes(junk), 3, 0, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Truncations of a valid encoding never decode into something accepted
  // silently: they are either rejected or (a prefix ending on a field
  // boundary) fail the coverage checks.
  const std::string enc = EncodeSenderManifest(Example());
  for (size_t cut = 1; cut < enc.size(); ++cut) {
    auto r = DecodeSenderManifest(AsBytes(enc.substr(0, cut)), 3, 0, 2);
    if (r.ok()) {
      // Only possible if whole tensors were dropped: never a partial tensor.
      for (const auto& t : r->tensors) {
        uint64_t n = 0;
        for (const auto& s : t.segments) n += s.bytes;
        EXPECT_EQ(n, t.spec.ByteSize());
      }
    }
  }
}

TEST(WireFormatTest, MergeRenumbersBucketsAndRejectsDuplicates) {
  SenderManifest a = Example(0);
  std::vector<OutputTensor> outs = {
      CopyOf(TensorSpec{"model.layers.0.mlp.down_proj.weight", DType::kBF16, {5000}}, 0)};
  auto plan = PlanBuckets(outs, 8192, 0);
  ASSERT_TRUE(plan.ok());
  SenderManifest b = MakeSenderManifest(3, 1, 2, outs, *plan, "");
  const size_t a_buckets = a.bucket_bytes.size();
  auto g = MergeManifests({a, b});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->buckets.size(), a_buckets + b.bucket_bytes.size());
  EXPECT_EQ(g->buckets.back().root, 1u);
  EXPECT_EQ(g->tensors.back().segments.front().bucket, a_buckets);
  EXPECT_EQ(g->config_json, "{\"a\":1}");
  uint64_t seen = 0;
  for (const auto& segs : g->bucket_segments) {
    for (const auto& [t, s] : segs) {
      EXPECT_EQ(g->tensors[t].owner, g->buckets[s.bucket].root);
      seen += s.bytes;
    }
  }
  EXPECT_EQ(seen, g->payload_bytes);
  SenderManifest dup = Example(1);
  auto bad = MergeManifests({Example(0), dup});
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("both sender 0 and sender 1"), std::string::npos);
}

}  // namespace
}  // namespace weightcast
