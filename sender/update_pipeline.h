// UpdatePipeline: runs one update on a sender rank over an already joined
// transport: manifest exchange, the buckets in global order (packing this
// rank's own buckets one ahead of the broadcast, in the two staging slots
// of a BucketPacker, host or GPU), and the commit vote. No gRPC, no rendezvous: the caller (Broadcaster)
// announces and joins; tests drive this directly.
#ifndef WEIGHTCAST_SENDER_UPDATE_PIPELINE_H_
#define WEIGHTCAST_SENDER_UPDATE_PIPELINE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/output_tensor.h"
#include "protocol/bucket_plan.h"
#include "protocol/group.h"
#include "sender/bucket_packer.h"
#include "sender/update_events.h"
#include "transport/transport.h"

namespace weightcast {

struct SenderUpdate {
  uint64_t weight_version = 0;
  uint64_t seq = 0;                      // announcement sequence number
  uint32_t num_senders = 0;
  std::span<const OutputTensor> outputs; // this rank's wire tensors
  std::span<const HostSource> sources;   // what the outputs read
  // Sources whose data is a device address (CUDA IPC); empty: all host.
  std::span<const uint8_t> source_on_device;
  // Where buckets are packed; null: a HostBucketPacker made for this update.
  // Its memory must be the transport's (GPU for NCCL).
  BucketPacker* packer = nullptr;
  const BucketPlan* plan = nullptr;      // PlanBuckets(outputs, ..., 0)
  std::string config_json;
  // The non-finite guard (PackInput::check_finite); false only with the
  // group's allow_non_finite.
  bool check_finite = true;
  absl::Duration op_timeout = absl::Seconds(120);
  // Optional: where receivers leave the reasons for a "no" vote.
  KeyValueStore* store = nullptr;
  // Optional: called once every own bucket was packed, before the vote. An
  // error (a source file truncated, replaced or written while it was read)
  // makes this rank vote no with it, like the non-finite guard.
  std::function<absl::Status()> sources_intact;
};

struct UpdateSummary {
  uint64_t bytes_sent = 0;    // payload bytes this rank broadcast
  uint64_t total_bytes = 0;   // payload bytes of the whole update
  uint32_t num_buckets = 0;
  // After the commit vote (with a store): what each receiver rank reports
  // it publishes now, and OK only when every one published this version
  // (else INTERNAL naming the ranks that did not, and why).
  std::vector<RankVersion> receivers;
  absl::Status published;
};

// Runs the update. Emits Planned, BucketSent (own buckets), SourceReleased
// (once every source byte was read). Returns OK only when every rank voted
// to commit; then waits (one op_timeout at most) for every receiver's
// publish report, in `receivers` and `published`. A transport error (returned as it is) leaves `transport`
// broken and the caller re-forms the group; a "no" vote is ABORTED, with
// the reasons other ranks left when `store` has them, and leaves the
// transport usable. A source holding NaN or +-inf (check_finite) is packed
// and broadcast all the same, then voted down by this rank: it returns the
// packer's NonFiniteValueError (INVALID_ARGUMENT naming the tensor and
// element) and leaves that reason in `store` for the others; the transport
// stays usable. Any other local packing error aborts the transport so no
// peer waits.
[[nodiscard]] absl::StatusOr<UpdateSummary> RunSenderUpdate(Transport& transport,
                                                            const SenderUpdate& update,
                                                            const UpdateEventSink& on_event);

}  // namespace weightcast

#endif  // WEIGHTCAST_SENDER_UPDATE_PIPELINE_H_
