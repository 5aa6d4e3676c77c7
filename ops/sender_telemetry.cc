#include "ops/sender_telemetry.h"

#include "absl/strings/str_cat.h"
#include "ops/structured_log.h"

namespace weightcast {
namespace {

const char* const kStates[] = {"uninitialized", "idle", "updating"};

}  // namespace

SenderTelemetry::SenderTelemetry(prometheus::Registry& r) : memory_(r) {
  duration_ = &prometheus::BuildHistogram()
                   .Name("weightcast_update_duration_seconds")
                   .Help("Seconds from Update to its end, by outcome")
                   .Register(r);
  source_released_ = &prometheus::BuildHistogram()
                          .Name("weightcast_source_released_seconds")
                          .Help("Seconds from Update until the trainer's tensors were read")
                          .Register(r)
                          .Add({}, kUpdateSecondsBuckets);
  bytes_ = &prometheus::BuildCounter()
                .Name("weightcast_update_bytes_total")
                .Help("Bytes of committed updates")
                .Register(r)
                .Add({});
  buckets_ = &prometheus::BuildCounter()
                  .Name("weightcast_buckets_sent_total")
                  .Help("Buckets this sender broadcast")
                  .Register(r)
                  .Add({});
  throughput_ = &prometheus::BuildGauge()
                     .Name("weightcast_update_throughput_bytes_per_second")
                     .Help("Bytes per second of the last committed update")
                     .Register(r)
                     .Add({});
  updates_ = &prometheus::BuildCounter()
                  .Name("weightcast_updates_total")
                  .Help("Updates that ended, by outcome (committed, failed)")
                  .Register(r);
  failures_ = &prometheus::BuildCounter()
                   .Name("weightcast_update_failures_total")
                   .Help("Failed updates by status code")
                   .Register(r);
  generation_ = &prometheus::BuildGauge()
                     .Name("weightcast_generation")
                     .Help("The group generation of the last update")
                     .Register(r)
                     .Add({});
  last_committed_ = &prometheus::BuildGauge()
                         .Name("weightcast_last_committed_version")
                         .Help("The last version the group committed")
                         .Register(r)
                         .Add({});
  published_ = &prometheus::BuildGauge()
                    .Name("weightcast_receiver_published_version")
                    .Help("The version each receiver rank reported publishing")
                    .Register(r);
  state_ = &prometheus::BuildGauge()
                .Name("weightcast_sender_state")
                .Help("1 for this sender's state (uninitialized, idle, updating)")
                .Register(r);
  registered_ = &prometheus::BuildGauge()
                     .Name("weightcast_registered_tensors")
                     .Help("Tensors registered with this sender")
                     .Register(r)
                     .Add({});
}

void SenderTelemetry::Observe(const UpdateContext& ctx, const UpdateEvent& event) {
  absl::MutexLock lock(&mu_);
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - ctx.started);
  if (const auto* e = std::get_if<PlannedEvent>(&event)) {
    LogEvent(spdlog::level::info, "update_planned",
             {{"rank", ctx.sender_rank}, {"version", ctx.version}, {"tensors", e->num_tensors},
              {"buckets", e->num_buckets}, {"own_buckets", e->own_buckets},
              {"bytes", e->total_bytes}});
  } else if (const auto* e = std::get_if<JoinedEvent>(&event)) {
    if (e->generation != last_generation_) {
      LogEvent(spdlog::level::info, "generation_change",
               {{"rank", ctx.sender_rank}, {"version", ctx.version},
                {"from", last_generation_}, {"generation", e->generation}});
      last_generation_ = e->generation;
    }
    generation_->Set(static_cast<double>(e->generation));
    LogEvent(spdlog::level::debug, "update_joined",
             {{"rank", ctx.sender_rank}, {"version", ctx.version}, {"seq", e->seq},
              {"generation", e->generation}, {"seconds", elapsed}});
  } else if (std::holds_alternative<BucketSentEvent>(event)) {
    buckets_->Increment();
  } else if (std::holds_alternative<SourceReleasedEvent>(event)) {
    source_released_->Observe(elapsed);
    LogEvent(spdlog::level::info, "source_released",
             {{"rank", ctx.sender_rank}, {"version", ctx.version}, {"seconds", elapsed}});
  } else if (const auto* e = std::get_if<CommittedEvent>(&event)) {
    duration_->Add({{"outcome", "committed"}}, kUpdateSecondsBuckets).Observe(e->seconds);
    updates_->Add({{"outcome", "committed"}}).Increment();
    bytes_->Increment(static_cast<double>(e->bytes));
    if (e->seconds > 0) throughput_->Set(static_cast<double>(e->bytes) / e->seconds);
    last_committed_->Set(static_cast<double>(ctx.version));
    for (const RankVersion& r : e->receivers) {
      published_->Add({{"rank", absl::StrCat(r.rank)}}).Set(static_cast<double>(r.version));
    }
    LogEvent(spdlog::level::info, "update_committed",
             {{"rank", ctx.sender_rank}, {"version", ctx.version}, {"generation", last_generation_},
              {"bytes", e->bytes}, {"seconds", e->seconds}});
  } else if (const auto* e = std::get_if<FailedEvent>(&event)) {
    const std::string code = absl::StatusCodeToString(e->status.code());
    duration_->Add({{"outcome", "failed"}}, kUpdateSecondsBuckets).Observe(elapsed);
    updates_->Add({{"outcome", "failed"}}).Increment();
    failures_->Add({{"code", code}}).Increment();
    for (const RankVersion& r : e->receivers) {
      published_->Add({{"rank", absl::StrCat(r.rank)}}).Set(static_cast<double>(r.version));
    }
    const bool peer = absl::IsUnavailable(e->status) || absl::IsDeadlineExceeded(e->status);
    LogEvent(spdlog::level::warn, peer ? "peer_lost" : "update_failed",
             {{"rank", ctx.sender_rank}, {"version", ctx.version}, {"generation", last_generation_},
              {"code", code}, {"reason", std::string(e->status.message())},
              {"seconds", elapsed}});
  }
}

void SenderTelemetry::Refresh(const BroadcasterStatus& status) {
  absl::MutexLock lock(&mu_);
  for (const char* s : kStates) {
    state_->Add({{"state", s}}).Set(status.state == s ? 1 : 0);
  }
  registered_->Set(status.registered_tensors);
  memory_.Refresh();
  last_committed_->Set(static_cast<double>(status.last_committed_version));
  generation_->Set(static_cast<double>(status.generation));
  for (const RankVersion& r : status.receivers) {
    published_->Add({{"rank", absl::StrCat(r.rank)}}).Set(static_cast<double>(r.version));
  }
}

Health SenderHealth(const BroadcasterStatus& status) {
  std::string reason = NotServingReason(status);
  return {.serving = reason.empty(), .reason = std::move(reason)};
}

}  // namespace weightcast
