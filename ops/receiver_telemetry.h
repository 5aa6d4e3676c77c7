// ReceiverTelemetry: what weightcast-recv tells operators, per inference
// rank, as Prometheus metrics and structured log lines (version_committed,
// version_aborted, rank_failed, rank_lost), and its health: serving while
// every rank's receive loop runs.
// Thread-safe: each rank's thread reports its own outcomes.
#ifndef WEIGHTCAST_OPS_RECEIVER_TELEMETRY_H_
#define WEIGHTCAST_OPS_RECEIVER_TELEMETRY_H_

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "ops/http_endpoint.h"
#include "ops/metrics.h"
#include "receiver/receiver.h"

namespace weightcast {

class ReceiverTelemetry {
 public:
  explicit ReceiverTelemetry(prometheus::Registry& registry);

  // A rank's loop started (it publishes `published`, 0: none).
  void RankStarted(int rank, uint64_t published);
  // A version ended on `rank`: committed (and published) or aborted.
  void VersionEnded(int rank, const ReceiveResult& result);
  // This rank's part of an update failed; `lost`: the rank gave up.
  void RankFailed(int rank, const absl::Status& status, bool lost);
  // The rank's loop ended (stop, lost, idle timeout).
  void RankStopped(int rank, const std::string& reason);

  [[nodiscard]] Health health() const;
  // Gauges read from the process (call before a scrape).
  void Refresh() { memory_.Refresh(); }

 private:
  mutable absl::Mutex mu_;
  prometheus::Family<prometheus::Histogram>* duration_;
  prometheus::Family<prometheus::Counter>* versions_;
  prometheus::Family<prometheus::Counter>* bytes_;
  prometheus::Family<prometheus::Counter>* failures_;
  prometheus::Family<prometheus::Gauge>* published_;
  prometheus::Family<prometheus::Gauge>* up_;
  DataPlaneMemoryGauges memory_;
  absl::flat_hash_map<int, std::string> stopped_ ABSL_GUARDED_BY(mu_);
  int ranks_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_OPS_RECEIVER_TELEMETRY_H_
