#include "protocol/manifest_exchange.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/checksum.h"
#include "common/status_macros.h"

namespace weightcast {

absl::StatusOr<GlobalManifest> ExchangeManifests(Transport& transport, uint32_t num_senders,
                                                 uint64_t weight_version,
                                                 const SenderManifest* mine,
                                                 absl::Duration op_timeout) {
  // The manifests are host memory on any transport (BroadcastHost stages
  // them through device memory where the transport moves that).
  std::vector<SenderManifest> parts;
  parts.reserve(num_senders);
  for (uint32_t s = 0; s < num_senders; ++s) {
    const bool root = transport.rank() == static_cast<int>(s);
    std::string payload;
    std::array<std::byte, kFrameHeaderBytes> header{};
    if (root) {
      if (mine == nullptr || mine->sender_rank != s) {
        return absl::InternalError(absl::StrCat("rank ", s, " has no manifest to send"));
      }
      payload = EncodeSenderManifest(*mine);
      header = EncodeFrameHeader(FrameHeader{
          .weight_version = weight_version,
          .sender_rank = s,
          .payload_bytes = payload.size(),
          .payload_checksum = BucketChecksum(reinterpret_cast<const std::byte*>(payload.data()),
                                             payload.size())});
    }
    RETURN_IF_ERROR(transport.BroadcastHost(header.data(), header.size(), static_cast<int>(s),
                                        absl::Now() + op_timeout));
    ASSIGN_OR_RETURN(FrameHeader h, DecodeFrameHeader(header));
    if (h.sender_rank != s || h.weight_version != weight_version) {
      return absl::DataLossError(absl::StrCat(
          "manifest frame from sender ", s, " says sender ", h.sender_rank, " version ",
          h.weight_version, ", expected version ", weight_version));
    }
    payload.resize(h.payload_bytes);
    RETURN_IF_ERROR(transport.BroadcastHost(payload.data(), payload.size(), static_cast<int>(s),
                                        absl::Now() + op_timeout));
    const auto* bytes = reinterpret_cast<const std::byte*>(payload.data());
    if (BucketChecksum(bytes, payload.size()) != h.payload_checksum) {
      return absl::DataLossError(
          absl::StrCat("manifest of sender ", s, ": checksum mismatch"));
    }
    ASSIGN_OR_RETURN(SenderManifest m, DecodeSenderManifest({bytes, payload.size()},
                                                            weight_version, s, num_senders));
    parts.push_back(std::move(m));
  }
  return MergeManifests(std::move(parts));
}

absl::Status BroadcastBucket(Transport& transport, void* data, size_t bytes, uint32_t root,
                             uint32_t num_senders, uint64_t seq, uint32_t bucket,
                             absl::Time deadline) {
  if (transport.SupportsPartialBroadcast()) {
    return transport.BroadcastToRanks(data, bytes, static_cast<int>(root),
                                      static_cast<int>(num_senders), BucketTag(seq, bucket),
                                      deadline);
  }
  return transport.Broadcast(data, bytes, static_cast<int>(root), deadline);
}

}  // namespace weightcast
