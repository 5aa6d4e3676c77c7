// The first phase of every update: each sender broadcasts its manifest
// (a 64-byte FrameHeader, then the encoded SenderManifest, root = sender),
// and every rank merges them into the same GlobalManifest.
#ifndef WEIGHTCAST_PROTOCOL_MANIFEST_EXCHANGE_H_
#define WEIGHTCAST_PROTOCOL_MANIFEST_EXCHANGE_H_

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "protocol/wire_format.h"
#include "transport/transport.h"

namespace weightcast {

// `mine` is this rank's manifest when it is a sender (rank < num_senders),
// nullptr on receivers. Each collective gets `op_timeout`.
// Errors: the transport's, DATA_LOSS for a corrupted manifest, or
// INVALID_ARGUMENT from the strict decoder, naming the sender. Host memory
// on every transport (Transport::BroadcastHost).
[[nodiscard]] absl::StatusOr<GlobalManifest> ExchangeManifests(Transport& transport,
                                                               uint32_t num_senders,
                                                               uint64_t weight_version,
                                                               const SenderManifest* mine,
                                                               absl::Duration op_timeout);

// Moves one bucket (payload + trailer) from its sender `root`: to the
// inference ranks only where the transport has a partial broadcast (then
// the other senders do not call), else to every rank. Used by both sides so
// they always agree on the mode and the tag.
[[nodiscard]] absl::Status BroadcastBucket(Transport& transport, void* data, size_t bytes,
                                           uint32_t root, uint32_t num_senders, uint64_t seq,
                                           uint32_t bucket, absl::Time deadline);

}  // namespace weightcast

#endif  // WEIGHTCAST_PROTOCOL_MANIFEST_EXCHANGE_H_
