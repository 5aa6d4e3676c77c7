// The update protocol on the wire (protocol version 1): fixed-size frames and
// the in-band manifest, with strict decoding.
//
// One update, as every rank of the group sees it:
//   1. for each sender s = 0..S-1 (root s): a 64-byte FrameHeader, then
//      FrameHeader.payload_bytes bytes of s's encoded SenderManifest;
//   2. every rank merges the S manifests into one GlobalManifest (receivers
//      need no prior knowledge of the model);
//   3. for each bucket in global order (root = its sender): the bucket
//      payload followed by a 32-byte BucketTrailer carrying its checksum;
//   4. a commit vote: all-reduce min of each rank's ok flag.
// Fixed-size parts are little-endian. See docs/PROTOCOL.md.
#ifndef WEIGHTCAST_PROTOCOL_WIRE_FORMAT_H_
#define WEIGHTCAST_PROTOCOL_WIRE_FORMAT_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/output_tensor.h"
#include "common/tensor_spec.h"
#include "protocol/bucket_plan.h"

namespace weightcast {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 64;
inline constexpr size_t kBucketTrailerBytes = 32;
// Largest encoded SenderManifest accepted (a 1T-parameter MoE has ~1M tensors).
inline constexpr uint64_t kMaxManifestBytes = uint64_t{512} << 20;

struct FrameHeader {
  uint64_t weight_version = 0;
  uint32_t sender_rank = 0;
  uint64_t payload_bytes = 0;
  uint64_t payload_checksum = 0;  // BucketChecksum of the payload
};

struct BucketTrailer {
  uint64_t checksum = 0;          // BucketChecksum of the payload
  uint64_t weight_version = 0;
  uint32_t bucket_index = 0;      // global index
  uint64_t payload_bytes = 0;
};

// The tag of bucket `bucket` of update `seq` in a partial broadcast
// (Transport::BroadcastToRanks): unique among the transfers in flight.
[[nodiscard]] inline uint64_t BucketTag(uint64_t seq, uint32_t bucket) {
  return ((seq & ((uint64_t{1} << 30) - 1)) << 32) | bucket;
}

[[nodiscard]] std::array<std::byte, kFrameHeaderBytes> EncodeFrameHeader(const FrameHeader& h);
// DATA_LOSS on a bad magic, FAILED_PRECONDITION on another protocol version,
// INVALID_ARGUMENT on a payload larger than kMaxManifestBytes.
[[nodiscard]] absl::StatusOr<FrameHeader> DecodeFrameHeader(
    std::span<const std::byte, kFrameHeaderBytes> bytes);

void EncodeBucketTrailer(const BucketTrailer& t, std::byte* out /* kBucketTrailerBytes */);
// DATA_LOSS on a bad magic.
[[nodiscard]] absl::StatusOr<BucketTrailer> DecodeBucketTrailer(const std::byte* in);

// One tensor of the manifest: what a receiver gets and where its bytes are.
struct ManifestTensor {
  TensorSpec spec;
  std::vector<Segment> segments;  // `bucket` is the global index after merge
  uint32_t owner = 0;             // sender rank
};

struct SenderManifest {
  uint64_t weight_version = 0;
  uint32_t sender_rank = 0;
  uint32_t num_senders = 0;
  std::vector<uint64_t> bucket_bytes;  // per local bucket
  std::vector<ManifestTensor> tensors;
  std::string config_json;
};

// Builds a sender's manifest from its outputs and plan (planned from bucket 0).
[[nodiscard]] SenderManifest MakeSenderManifest(uint64_t weight_version, uint32_t sender_rank,
                                                uint32_t num_senders,
                                                std::span<const OutputTensor> outputs,
                                                const BucketPlan& plan, std::string config_json);

[[nodiscard]] std::string EncodeSenderManifest(const SenderManifest& m);

// Strict decode: INVALID_ARGUMENT (naming the tensor, segment or bucket) on
// anything malformed: unparsable bytes, wrong protocol, version or rank,
// invalid tensor specs, duplicate names, segments that do not cover their
// tensor exactly in order, leave their bucket, overlap, or name a bucket
// that does not exist, buckets larger than kMaxBucketBytes.
[[nodiscard]] absl::StatusOr<SenderManifest> DecodeSenderManifest(
    std::span<const std::byte> bytes, uint64_t expected_version, uint32_t expected_rank,
    uint32_t num_senders);

struct GlobalBucket {
  uint32_t root = 0;   // sender rank that broadcasts it
  uint64_t bytes = 0;
};

struct GlobalManifest {
  uint64_t weight_version = 0;
  std::vector<ManifestTensor> tensors;  // sender 0's first, then 1's, ...
  std::vector<GlobalBucket> buckets;    // global order
  // Per global bucket: (tensor index, segment) pairs, in bucket order.
  std::vector<std::vector<std::pair<uint32_t, Segment>>> bucket_segments;
  std::string config_json;              // the first non-empty one
  uint64_t payload_bytes = 0;           // sum of tensor bytes
};

// Merges the senders' manifests (index = sender rank): renumbers buckets
// globally and checks that tensor names are unique across senders.
[[nodiscard]] absl::StatusOr<GlobalManifest> MergeManifests(std::vector<SenderManifest> parts);

}  // namespace weightcast

#endif  // WEIGHTCAST_PROTOCOL_WIRE_FORMAT_H_
