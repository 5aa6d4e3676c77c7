#include "protocol/wire_format.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/config_json.h"
#include "common/status_macros.h"
#include "weightcast/v1/wire.pb.h"

namespace weightcast {
namespace {

constexpr uint32_t kFrameMagic = 0x54534357;    // "WCST"
constexpr uint32_t kTrailerMagic = 0x4b434257;  // "WBCK"

void Put32(std::byte* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
void Put64(std::byte* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
uint32_t Get32(const std::byte* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
uint64_t Get64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace

// Frame header layout: magic u32 | protocol u32 | weight_version u64 |
// sender_rank u32 | reserved u32 | payload_bytes u64 | payload_checksum u64 |
// zero padding to 64 bytes.
std::array<std::byte, kFrameHeaderBytes> EncodeFrameHeader(const FrameHeader& h) {
  std::array<std::byte, kFrameHeaderBytes> out{};
  Put32(&out[0], kFrameMagic);
  Put32(&out[4], kProtocolVersion);
  Put64(&out[8], h.weight_version);
  Put32(&out[16], h.sender_rank);
  Put64(&out[24], h.payload_bytes);
  Put64(&out[32], h.payload_checksum);
  return out;
}

absl::StatusOr<FrameHeader> DecodeFrameHeader(std::span<const std::byte, kFrameHeaderBytes> b) {
  if (Get32(&b[0]) != kFrameMagic) {
    return absl::DataLossError("manifest frame: bad magic (not a weightcast peer, or corrupted)");
  }
  const uint32_t protocol = Get32(&b[4]);
  if (protocol != kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "manifest frame: peer speaks protocol ", protocol, ", this build speaks ",
        kProtocolVersion));
  }
  FrameHeader h;
  h.weight_version = Get64(&b[8]);
  h.sender_rank = Get32(&b[16]);
  h.payload_bytes = Get64(&b[24]);
  h.payload_checksum = Get64(&b[32]);
  if (h.payload_bytes > kMaxManifestBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "manifest frame of sender ", h.sender_rank, ": ", h.payload_bytes,
        " bytes exceeds the limit ", kMaxManifestBytes));
  }
  return h;
}

// Trailer layout: checksum u64 | weight_version u64 | bucket_index u32 |
// magic u32 | payload_bytes u64.
void EncodeBucketTrailer(const BucketTrailer& t, std::byte* out) {
  Put64(out, t.checksum);
  Put64(out + 8, t.weight_version);
  Put32(out + 16, t.bucket_index);
  Put32(out + 20, kTrailerMagic);
  Put64(out + 24, t.payload_bytes);
}

absl::StatusOr<BucketTrailer> DecodeBucketTrailer(const std::byte* in) {
  if (Get32(in + 20) != kTrailerMagic) {
    return absl::DataLossError("bucket trailer: bad magic");
  }
  BucketTrailer t;
  t.checksum = Get64(in);
  t.weight_version = Get64(in + 8);
  t.bucket_index = Get32(in + 16);
  t.payload_bytes = Get64(in + 24);
  return t;
}

SenderManifest MakeSenderManifest(uint64_t weight_version, uint32_t sender_rank,
                                  uint32_t num_senders, std::span<const OutputTensor> outputs,
                                  const BucketPlan& plan, std::string config_json) {
  SenderManifest m;
  m.weight_version = weight_version;
  m.sender_rank = sender_rank;
  m.num_senders = num_senders;
  for (const Bucket& b : plan.buckets) m.bucket_bytes.push_back(b.bytes);
  m.tensors.reserve(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    m.tensors.push_back(ManifestTensor{.spec = outputs[i].spec,
                                       .segments = plan.tensor_segments[i],
                                       .owner = sender_rank});
  }
  m.config_json = std::move(config_json);
  return m;
}

std::string EncodeSenderManifest(const SenderManifest& m) {
  v1::wire::SenderManifest pb;
  pb.set_protocol_version(kProtocolVersion);
  pb.set_weight_version(m.weight_version);
  pb.set_sender_rank(m.sender_rank);
  pb.set_num_senders(m.num_senders);
  for (uint64_t bytes : m.bucket_bytes) pb.add_buckets()->set_bytes(bytes);
  for (const ManifestTensor& t : m.tensors) {
    v1::wire::Tensor* pt = pb.add_tensors();
    pt->set_name(t.spec.name);
    pt->set_dtype(static_cast<uint32_t>(t.spec.dtype));
    for (int64_t d : t.spec.shape) pt->add_shape(d);
    for (const Segment& s : t.segments) {
      v1::wire::Segment* ps = pt->add_segments();
      ps->set_bucket(s.bucket);
      ps->set_bucket_offset(s.bucket_offset);
      ps->set_tensor_offset(s.tensor_offset);
      ps->set_bytes(s.bytes);
    }
  }
  pb.set_config_json(m.config_json);
  return pb.SerializeAsString();
}

absl::StatusOr<SenderManifest> DecodeSenderManifest(std::span<const std::byte> bytes,
                                                    uint64_t expected_version,
                                                    uint32_t expected_rank,
                                                    uint32_t num_senders) {
  const std::string who = absl::StrCat("manifest of sender ", expected_rank);
  v1::wire::SenderManifest pb;
  if (!pb.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": not a valid encoding"));
  }
  if (pb.protocol_version() != kProtocolVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": protocol version ", pb.protocol_version()));
  }
  if (pb.weight_version() != expected_version) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, ": weight version ", pb.weight_version(), ", expected ", expected_version));
  }
  if (pb.sender_rank() != expected_rank || pb.num_senders() != num_senders) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, ": claims sender ", pb.sender_rank(), " of ", pb.num_senders(),
        ", expected ", expected_rank, " of ", num_senders));
  }
  SenderManifest m;
  m.weight_version = pb.weight_version();
  m.sender_rank = pb.sender_rank();
  m.num_senders = pb.num_senders();
  m.config_json = pb.config_json();
  if (!m.config_json.empty()) {
    RETURN_IF_ERROR(ValidateConfigJson(m.config_json, absl::StrCat(who, ": config_json")));
  }
  for (int i = 0; i < pb.buckets_size(); ++i) {
    const uint64_t b = pb.buckets(i).bytes();
    if (b == 0 || b > kMaxBucketBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": bucket ", i, " has invalid size ", b));
    }
    m.bucket_bytes.push_back(b);
  }
  // Per bucket: (offset, end, tensor) of every segment, to detect overlaps.
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> used(m.bucket_bytes.size());
  absl::flat_hash_set<std::string> names;
  for (const v1::wire::Tensor& pt : pb.tensors()) {
    ManifestTensor t;
    t.owner = expected_rank;
    t.spec.name = pt.name();
    ASSIGN_OR_RETURN(t.spec.dtype, DTypeFromWire(pt.dtype()));
    t.spec.shape.assign(pt.shape().begin(), pt.shape().end());
    if (absl::Status s = ValidateTensorSpec(t.spec); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(who, ": ", s.message()));
    }
    if (!names.insert(t.spec.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": tensor '", t.spec.name, "' appears twice"));
    }
    uint64_t covered = 0;
    for (const v1::wire::Segment& ps : pt.segments()) {
      Segment s{.tensor = static_cast<uint32_t>(m.tensors.size()),
                .bucket = ps.bucket(),
                .bucket_offset = ps.bucket_offset(),
                .tensor_offset = ps.tensor_offset(),
                .bytes = ps.bytes()};
      if (s.bucket >= m.bucket_bytes.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            who, ": tensor '", t.spec.name, "' names bucket ", s.bucket, " of ",
            m.bucket_bytes.size()));
      }
      if (s.bytes == 0 || s.tensor_offset != covered) {
        return absl::InvalidArgumentError(absl::StrCat(
            who, ": tensor '", t.spec.name, "' segments do not cover it in order (at byte ",
            covered, ")"));
      }
      const uint64_t bucket_size = m.bucket_bytes[s.bucket];
      if (s.bucket_offset > bucket_size || s.bytes > bucket_size - s.bucket_offset) {
        return absl::InvalidArgumentError(absl::StrCat(
            who, ": tensor '", t.spec.name, "' segment leaves bucket ", s.bucket));
      }
      used[s.bucket].emplace_back(s.bucket_offset, s.bucket_offset + s.bytes);
      covered += s.bytes;
      if (covered > t.spec.ByteSize()) break;
      t.segments.push_back(s);
    }
    if (covered != t.spec.ByteSize()) {
      return absl::InvalidArgumentError(absl::StrCat(
          who, ": tensor '", t.spec.name, "' has ", covered, " bytes in segments, its shape needs ",
          t.spec.ByteSize()));
    }
    m.tensors.push_back(std::move(t));
  }
  for (size_t b = 0; b < used.size(); ++b) {
    std::sort(used[b].begin(), used[b].end());
    for (size_t i = 1; i < used[b].size(); ++i) {
      if (used[b][i].first < used[b][i - 1].second) {
        return absl::InvalidArgumentError(
            absl::StrCat(who, ": segments overlap in bucket ", b));
      }
    }
  }
  return m;
}

absl::StatusOr<GlobalManifest> MergeManifests(std::vector<SenderManifest> parts) {
  GlobalManifest g;
  size_t total = 0;
  for (const SenderManifest& p : parts) total += p.tensors.size();
  // Keys view the names in g.tensors, reserved up front so they never move.
  g.tensors.reserve(total);
  absl::flat_hash_map<std::string_view, uint32_t> owner_of;
  owner_of.reserve(total);
  for (uint32_t rank = 0; rank < parts.size(); ++rank) {
    SenderManifest& p = parts[rank];
    if (rank == 0) g.weight_version = p.weight_version;
    if (p.weight_version != g.weight_version || p.sender_rank != rank) {
      return absl::InvalidArgumentError(absl::StrCat(
          "manifest of sender ", rank, " disagrees on version or rank"));
    }
    const uint32_t first = static_cast<uint32_t>(g.buckets.size());
    for (uint64_t bytes : p.bucket_bytes) g.buckets.push_back(GlobalBucket{rank, bytes});
    g.bucket_segments.resize(g.buckets.size());
    for (ManifestTensor& t : p.tensors) {
      const uint32_t index = static_cast<uint32_t>(g.tensors.size());
      g.tensors.push_back(std::move(t));
      ManifestTensor& mt = g.tensors.back();
      auto [it, inserted] = owner_of.emplace(mt.spec.name, rank);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", mt.spec.name, "' is sent by both sender ", it->second, " and sender ",
            rank));
      }
      for (Segment& s : mt.segments) {
        s.bucket += first;
        s.tensor = index;
        g.bucket_segments[s.bucket].emplace_back(index, s);
      }
      g.payload_bytes += mt.spec.ByteSize();
    }
    if (g.config_json.empty()) g.config_json = std::move(p.config_json);
  }
  for (auto& segs : g.bucket_segments) {
    std::sort(segs.begin(), segs.end(), [](const auto& a, const auto& b) {
      return a.second.bucket_offset < b.second.bucket_offset;
    });
  }
  return g;
}

}  // namespace weightcast
