#include "ops/receiver_telemetry.h"

#include "absl/strings/str_cat.h"
#include "ops/structured_log.h"

namespace weightcast {
namespace {

prometheus::Labels Rank(int rank) { return {{"rank", absl::StrCat(rank)}}; }

}  // namespace

ReceiverTelemetry::ReceiverTelemetry(prometheus::Registry& r) : memory_(r) {
  duration_ = &prometheus::BuildHistogram()
                   .Name("weightcast_receive_duration_seconds")
                   .Help("Seconds a version took on this rank, by outcome")
                   .Register(r);
  versions_ = &prometheus::BuildCounter()
                   .Name("weightcast_versions_total")
                   .Help("Versions that ended on this rank, by outcome (committed, aborted)")
                   .Register(r);
  bytes_ = &prometheus::BuildCounter()
                .Name("weightcast_received_bytes_total")
                .Help("Bytes of committed versions received")
                .Register(r);
  failures_ = &prometheus::BuildCounter()
                   .Name("weightcast_receive_failures_total")
                   .Help("Updates this rank's part of failed, by status code")
                   .Register(r);
  published_ = &prometheus::BuildGauge()
                    .Name("weightcast_published_version")
                    .Help("The version this rank publishes (LATEST)")
                    .Register(r);
  up_ = &prometheus::BuildGauge()
             .Name("weightcast_rank_up")
             .Help("1 while the rank's receive loop runs")
             .Register(r);
}

void ReceiverTelemetry::RankStarted(int rank, uint64_t published) {
  absl::MutexLock lock(&mu_);
  ++ranks_;
  published_->Add(Rank(rank)).Set(static_cast<double>(published));
  up_->Add(Rank(rank)).Set(1);
  LogEvent(spdlog::level::info, "rank_started", {{"rank", rank}, {"published", published}});
}

void ReceiverTelemetry::VersionEnded(int rank, const ReceiveResult& r) {
  absl::MutexLock lock(&mu_);
  const char* outcome = r.committed ? "committed" : "aborted";
  prometheus::Labels labels = Rank(rank);
  labels["outcome"] = outcome;
  duration_->Add(labels, kUpdateSecondsBuckets).Observe(r.seconds);
  versions_->Add(labels).Increment();
  if (r.committed) {
    bytes_->Add(Rank(rank)).Increment(static_cast<double>(r.bytes));
    published_->Add(Rank(rank)).Set(static_cast<double>(r.weight_version));
    LogEvent(spdlog::level::info, "version_committed",
             {{"rank", rank}, {"version", r.weight_version}, {"bytes", r.bytes},
              {"seconds", r.seconds}, {"location", r.location}});
  } else {
    LogEvent(spdlog::level::warn, "version_aborted",
             {{"rank", rank}, {"version", r.weight_version}, {"seconds", r.seconds},
              {"reason", r.reason}});
  }
}

void ReceiverTelemetry::RankFailed(int rank, const absl::Status& status, bool lost) {
  absl::MutexLock lock(&mu_);
  const std::string code = absl::StatusCodeToString(status.code());
  prometheus::Labels labels = Rank(rank);
  labels["code"] = code;
  failures_->Add(labels).Increment();
  LogEvent(lost ? spdlog::level::err : spdlog::level::warn, lost ? "rank_lost" : "rank_failed",
           {{"rank", rank}, {"code", code}, {"reason", std::string(status.message())}});
}

void ReceiverTelemetry::RankStopped(int rank, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  stopped_[rank] = reason;
  up_->Add(Rank(rank)).Set(0);
}

Health ReceiverTelemetry::health() const {
  absl::MutexLock lock(&mu_);
  if (ranks_ == 0) return {.serving = false, .reason = "starting"};
  for (const auto& [rank, reason] : stopped_) {
    return {.serving = false, .reason = absl::StrCat("rank ", rank, " stopped: ", reason)};
  }
  return {.serving = true};
}

}  // namespace weightcast
