// weightcast-recv: joins a weightcast group as one or more inference ranks
// and writes every committed version as a Hugging Face checkpoint.
//
//   weightcast-recv --rendezvous 127.0.0.1:29501 --rank-offset 2 --out /ckpt
//
// Each version lands atomically in OUT/step_<version> (OUT/rank<r>/... with
// several ranks) and OUT/LATEST names the newest one; a version the group
// aborts leaves no trace. Exit codes: 0 done (--max-updates reached or
// SIGTERM), 1 a rank failed for good, 2 bad usage.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <prometheus/registry.h>
#include <systemd/sd-daemon.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/checkpoint.h"
#include "common/secret.h"
#include "cmd/cli.h"
#include "ops/http_endpoint.h"
#include "ops/receiver_telemetry.h"
#include "ops/structured_log.h"
#include "protocol/rendezvous_store.h"
#include "receiver/checkpoint_sink.h"
#include "receiver/discard_sink.h"
#include "receiver/receiver.h"
#include "receiver/transforming_sink.h"

namespace {

std::atomic<bool> g_stop{false};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"weightcast-recv: receive weight versions into checkpoint directories"};
  std::string rendezvous, token, out, bind_host = "127.0.0.1";
  int rank_offset = -1, num_ranks = 1, corrupt_bucket = -1, exit_after_bucket = -1;
  uint64_t fault_version = 0;
  std::string layout = "hf", family;
  weightcast::VllmRank vllm;
  uint64_t max_updates = 0, shard_bytes = uint64_t{4} << 30;
  double timeout_s = 120, idle_timeout_s = 0;
  app.add_option("--rendezvous", rendezvous, "HOST:PORT of sender 0's rendezvous")->required();
  std::string token_file;
  app.add_option("--token-file", token_file,
                 "file holding the group token (default: $WEIGHTCAST_TOKEN)");
  app.add_option("--rank,--rank-offset", rank_offset,
                 "this process's (first) global inference rank (--rank-offset: the old "
                 "spelling, kept for one release)")
      ->required();
  app.add_option("--num-ranks", num_ranks, "inference ranks this process joins as")
      ->capture_default_str();
  app.add_option("--out", out, "output root directory")->required();
  app.add_option("--max-updates", max_updates, "exit after this many updates (0: run until SIGTERM)");
  app.add_option("--shard-bytes", shard_bytes, "largest safetensors shard")->capture_default_str();
  app.add_option("--timeout", timeout_s, "seconds per collective")->capture_default_str();
  app.add_option("--idle-timeout", idle_timeout_s,
                 "exit with 1 if no update is announced for this long (0: wait)");
  app.add_option("--bind-host", bind_host, "data-plane bind address")->capture_default_str();
  int cuda_device = 0;
  bool discard = false;
  app.add_flag("--discard", discard,
               "benchmarks: verify every bucket, keep nothing (no checkpoint is written)");
  app.add_option("--cuda-device", cuda_device,
                 "GPU of this receiver when the group announces the nccl transport")
      ->capture_default_str();
  app.add_option("--layout", layout, "hf (as sent) or vllm (FusedMoE w13/w2 for this rank)")
      ->capture_default_str();
  app.add_option("--family", family, "model family for --layout vllm (default: config.json)");
  app.add_option("--tp-rank", vllm.tp_rank, "vLLM tensor-parallel rank")->capture_default_str();
  app.add_option("--tp-size", vllm.tp_size, "vLLM tensor-parallel size")->capture_default_str();
  app.add_option("--ep-rank", vllm.ep_rank, "vLLM expert-parallel rank")->capture_default_str();
  app.add_option("--ep-size", vllm.ep_size, "vLLM expert-parallel size")->capture_default_str();
  // Test hooks: in no group, so --help does not list them.
  app.add_option("--test-corrupt-bucket", corrupt_bucket, "test hook: flip a byte in this bucket")
      ->group("");
  app.add_option("--test-exit-after-bucket", exit_after_bucket,
                 "test hook: exit (as a crash) after receiving this bucket")
      ->group("");
  bool fail_publish = false;
  app.add_flag("--test-fail-publish", fail_publish,
               "test hook: fail to publish after the group voted to commit")
      ->group("");
  app.add_option("--test-fault-version", fault_version,
                 "test hooks apply to this version only (0: all)")
      ->group("");
  std::string log_level = "info", log_format = "text", metrics_listen;
  size_t keep = 0;
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  app.add_option("--log-format", log_format, "text, or json (one object per line)")
      ->capture_default_str();
  app.add_option("--metrics-listen", metrics_listen,
                 "HOST:PORT serving /metrics (Prometheus) and /healthz (off when empty)");
  app.add_option("--keep", keep,
                 "keep the newest N step_* directories, removing older ones after each commit "
                 "(0: keep all)")
      ->capture_default_str();
  weightcast::AddStandardFlags(app, "weightcast-recv");
  std::string file_mode_text = "0640";
  app.add_option("--file-mode", file_mode_text,
                 "permission bits (octal) of the checkpoint files written; directories get "
                 "search where read is allowed")
      ->capture_default_str();
  if (std::optional<int> rc = weightcast::ParseCommandLine(app, argc, argv)) return *rc;
  if (absl::Status s = weightcast::ConfigureLogging(log_level, log_format); !s.ok()) {
    std::fprintf(stderr, "weightcast-recv: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  const uint32_t file_mode =
      static_cast<uint32_t>(std::strtoul(file_mode_text.c_str(), nullptr, 8));
  if (file_mode_text.empty() || file_mode_text.size() > 4 ||
      file_mode_text.find_first_not_of("01234567") != std::string::npos ||
      (file_mode & ~0666u) != 0 || (file_mode & 0600) != 0600) {
    std::fprintf(stderr, "weightcast-recv: --file-mode %s: give octal read/write bits with "
                         "the owner's both, e.g. 0640 or 0600\n", file_mode_text.c_str());
    return 2;
  }
  if (num_ranks < 1 || rank_offset < 1 || cuda_device < 0 || max_updates > 1000000 || shard_bytes < 4096) {
    std::fprintf(stderr, "weightcast-recv: bad --num-ranks, --rank-offset, --cuda-device or --shard-bytes\n");
    return 2;
  }
  if (!(timeout_s > 0 && timeout_s <= 86400) || !(idle_timeout_s >= 0 && idle_timeout_s <= 1e9)) {
    std::fprintf(stderr, "weightcast-recv: --timeout must be in (0, 86400] seconds and "
                         "--idle-timeout >= 0\n");
    return 2;
  }
  {
    absl::StatusOr<std::string> t = weightcast::ReadToken(token_file);
    if (!t.ok()) {
      std::fprintf(stderr, "weightcast-recv: %s\n", std::string(t.status().message()).c_str());
      return 2;
    }
    if (t->empty()) {
      std::fprintf(stderr, "weightcast-recv: a group token is required (--token-file or "
                           "$WEIGHTCAST_TOKEN)\n");
      return 2;
    }
    token = *t;
  }
  if (layout != "hf" && layout != "vllm") {
    std::fprintf(stderr, "weightcast-recv: --layout must be hf or vllm\n");
    return 2;
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR1);  // main wakes the signal thread with it
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  weightcast::RendezvousKeyValueStore store(rendezvous, token, absl::Seconds(timeout_s));
  std::vector<std::unique_ptr<weightcast::Receiver>> receivers;
  auto out_dir = [&](int rank) {
    return num_ranks == 1 ? out : absl::StrCat(out, "/rank", rank);
  };
  for (int i = 0; i < num_ranks; ++i) {
    weightcast::ReceiverOptions opts;
    opts.rank = rank_offset + i;
    absl::StatusOr<uint64_t> latest = weightcast::CheckpointWriter::ReadLatest(out_dir(opts.rank));
    if (latest.ok() && !discard) opts.published_version = *latest;
    opts.test_fail_publish = fail_publish;
    opts.cuda_device = cuda_device;
    opts.op_timeout = absl::Seconds(timeout_s);
    opts.test_corrupt_bucket = corrupt_bucket;
    opts.test_exit_after_bucket = exit_after_bucket;
    opts.test_fault_version = fault_version;
    auto r = weightcast::Receiver::Create(
        opts, &store, weightcast::MakeTransportFactory({.rendezvous_address = rendezvous,
                                                 .token = token,
                                                 .bind_host = bind_host,
                                                 .cuda_device = cuda_device}));
    if (!r.ok()) {
      spdlog::error("rank {}: {}", opts.rank, r.status().ToString());
      return 1;
    }
    receivers.push_back(*std::move(r));
  }

  auto registry = std::make_shared<prometheus::Registry>();
  weightcast::ReceiverTelemetry telemetry(*registry);
  std::unique_ptr<weightcast::OpsEndpoint> ops;
  if (!metrics_listen.empty()) {
    auto e = weightcast::OpsEndpoint::Start(
        metrics_listen, registry, [&telemetry] { return telemetry.health(); },
        [&telemetry] { telemetry.Refresh(); });
    if (!e.ok()) {
      spdlog::error("--metrics-listen: {}", std::string(e.status().message()));
      return 2;
    }
    ops = *std::move(e);
    spdlog::info("metrics and health on http://{}/metrics, /healthz", ops->address());
  }

  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < num_ranks; ++i) {
    threads.emplace_back([&, i] {
      const int rank = rank_offset + i;
      const std::string dir = out_dir(rank);
      (void)weightcast::CheckpointWriter::CleanStaleTemps(dir);
      weightcast::CheckpointDirSink checkpoint(dir, shard_bytes, file_mode);
      weightcast::TransformingSink vllm_sink(&checkpoint,
                                             weightcast::VllmLayoutBuilder(family, vllm));
      weightcast::DiscardSink discarding;
      weightcast::Sink& sink = discard            ? static_cast<weightcast::Sink&>(discarding)
                               : layout == "vllm" ? static_cast<weightcast::Sink&>(vllm_sink)
                                                  : checkpoint;
      uint64_t done = 0;
      absl::Time last_activity = absl::Now();
      telemetry.RankStarted(rank, weightcast::CheckpointWriter::ReadLatest(dir).value_or(0));
      std::string stop_reason = "stopped";
      while (!g_stop && (max_updates == 0 || done < max_updates)) {
        auto result = receivers[i]->ReceiveNext(sink, absl::Seconds(1));
        if (!result.ok()) {
          if (absl::IsCancelled(result.status())) break;
          if (receivers[i]->rank_lost()) {
            telemetry.RankFailed(rank, result.status(), /*lost=*/true);
            stop_reason = std::string(result.status().message());
            ++failures;
            break;
          }
          // This rank's part failed (the group re-forms at the next update).
          telemetry.RankFailed(rank, result.status(), /*lost=*/false);
          ++done;
          last_activity = absl::Now();
          continue;
        }
        if (!result->has_value()) {
          if (idle_timeout_s > 0 && absl::Now() - last_activity > absl::Seconds(idle_timeout_s)) {
            spdlog::error("rank {}: no update announced for {} s", rank, idle_timeout_s);
            stop_reason = "idle timeout";
            ++failures;
            break;
          }
          continue;
        }
        const weightcast::ReceiveResult& r = **result;
        ++done;
        last_activity = absl::Now();
        telemetry.VersionEnded(rank, r);
        if (r.committed && keep > 0 && !discard) {
          absl::StatusOr<size_t> pruned = weightcast::CheckpointWriter::KeepNewest(dir, keep);
          if (!pruned.ok()) spdlog::warn("rank {}: --keep: {}", rank, pruned.status().ToString());
        }
        if (r.committed) {
          std::printf("rank %d: committed version %llu -> %s (%llu bytes, %.3f s, %.2f GB/s)\n",
                      rank, static_cast<unsigned long long>(r.weight_version),
                      r.location.c_str(), static_cast<unsigned long long>(r.bytes), r.seconds,
                      r.seconds > 0 ? r.bytes / r.seconds / 1e9 : 0.0);
        } else {
          std::printf("rank %d: version %llu aborted by the group: %s\n", rank,
                      static_cast<unsigned long long>(r.weight_version), r.reason.c_str());
        }
        std::fflush(stdout);
      }
      telemetry.RankStopped(rank, stop_reason);
    });
  }
  sd_notify(0, absl::StrCat("READY=1\nSTATUS=receiving as rank ", rank_offset,
                            num_ranks > 1 ? absl::StrCat("..", rank_offset + num_ranks - 1) : "")
                   .c_str());
  std::thread signal_waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGUSR1) return;  // woken by main at the end
    g_stop = true;
    for (auto& r : receivers) r->Stop();
  });
  for (auto& t : threads) t.join();
  g_stop = true;
  // Wake the signal thread so the process can exit.
  pthread_kill(signal_waiter.native_handle(), SIGUSR1);
  signal_waiter.join();
  return failures > 0 ? 1 : 0;
}
