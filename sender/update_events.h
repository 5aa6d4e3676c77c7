// Progress events of one update, as the core emits them (the gRPC adapter
// turns them into weightcast.v1.UpdateEvent).
#ifndef WEIGHTCAST_SENDER_UPDATE_EVENTS_H_
#define WEIGHTCAST_SENDER_UPDATE_EVENTS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "protocol/group.h"

namespace weightcast {

struct PlannedEvent {
  uint32_t num_buckets = 0;
  uint32_t own_buckets = 0;
  uint64_t total_bytes = 0;
  uint32_t num_tensors = 0;
};
struct BucketSentEvent {
  uint32_t index = 0;
  uint32_t num_buckets = 0;
  uint64_t bytes = 0;
  uint32_t root = 0;
};
struct SourceReleasedEvent {};
// This sender joined the group for the update (observers only: the
// caller's sink never sees it).
struct JoinedEvent {
  uint64_t seq = 0;
  uint64_t generation = 0;
};
struct CommittedEvent {
  uint64_t version = 0;
  uint64_t bytes = 0;
  double seconds = 0;
  std::vector<RankVersion> receivers;  // each receiver rank published `version`
};
struct FailedEvent {
  uint64_t version = 0;
  absl::Status status;
  // When the group committed but a receiver did not publish: what each
  // receiver rank holds now. Empty when the version was not committed.
  std::vector<RankVersion> receivers;
};

using UpdateEvent =
    std::variant<PlannedEvent, BucketSentEvent, SourceReleasedEvent, CommittedEvent, FailedEvent,
                 JoinedEvent>;
// Called on the update thread; must not block for long.
using UpdateEventSink = std::function<void(const UpdateEvent&)>;

}  // namespace weightcast

#endif  // WEIGHTCAST_SENDER_UPDATE_EVENTS_H_
