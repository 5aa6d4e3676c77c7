// SenderTelemetry: what weightcastd tells operators about its updates, as
// Prometheus metrics (served by OpsEndpoint) and one structured log line
// per update phase (ops/structured_log.h):
//   update_planned, update_joined (the group's generation; generation_change
//   when it moved), source_released, update_committed, update_failed.
//
//   auto registry = std::make_shared<prometheus::Registry>();
//   SenderTelemetry telemetry(*registry);
//   core.SetObserver([&](auto& ctx, auto& e) { telemetry.Observe(ctx, e); });
//   OpsEndpoint::Start(addr, registry, probe, [&] { telemetry.Refresh(core.GetStatus()); });
//
// Thread-safe.
#ifndef WEIGHTCAST_OPS_SENDER_TELEMETRY_H_
#define WEIGHTCAST_OPS_SENDER_TELEMETRY_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/synchronization/mutex.h"
#include "ops/http_endpoint.h"
#include "ops/metrics.h"
#include "sender/broadcaster.h"

namespace weightcast {

class SenderTelemetry {
 public:
  explicit SenderTelemetry(prometheus::Registry& registry);

  // One event of an update: metrics, and the phase's log line.
  void Observe(const UpdateContext& ctx, const UpdateEvent& event);
  // Gauges read from the core's state (call before a scrape).
  void Refresh(const BroadcasterStatus& status);

 private:
  absl::Mutex mu_;
  prometheus::Family<prometheus::Histogram>* duration_;
  prometheus::Histogram* source_released_;
  prometheus::Counter* bytes_;
  prometheus::Counter* buckets_;
  prometheus::Gauge* throughput_;
  prometheus::Family<prometheus::Counter>* updates_;
  prometheus::Family<prometheus::Counter>* failures_;
  prometheus::Gauge* generation_;
  prometheus::Gauge* last_committed_;
  prometheus::Family<prometheus::Gauge>* published_;
  prometheus::Family<prometheus::Gauge>* state_;
  prometheus::Gauge* registered_;
  DataPlaneMemoryGauges memory_;
  uint64_t last_generation_ ABSL_GUARDED_BY(mu_) = 0;
};

// The daemon's health: NOT_SERVING while uninitialised or while its group
// is broken (status.group_broken), with the reason.
[[nodiscard]] Health SenderHealth(const BroadcasterStatus& status);

}  // namespace weightcast

#endif  // WEIGHTCAST_OPS_SENDER_TELEMETRY_H_
