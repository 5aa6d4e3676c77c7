// weightcastd: the sidecar next to one trainer rank. Parses flags into
// ServerOptions, starts the Server, and shuts it down on SIGTERM/SIGINT.
//
//   weightcastd --listen unix:/run/weightcast/rank0.sock [--control-group trainers]
//   WEIGHTCAST_CONTROL_TOKEN=... weightcastd --listen 127.0.0.1:50151 --init-config init.textproto
//   weightcastd --listen 10.0.0.5:50151 --allow-remote --control-token-file F \
//               --tls-cert cert.pem --tls-key key.pem
#include <csignal>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <google/protobuf/text_format.h>
#include <spdlog/spdlog.h>

#include "access/control_auth.h"
#include "access/peer.h"
#include <prometheus/registry.h>
#include <systemd/sd-daemon.h>

#include "common/secret.h"
#include "cmd/cli.h"
#include "ops/http_endpoint.h"
#include "ops/sender_telemetry.h"
#include "ops/structured_log.h"
#include "sender/broadcaster_service.h"
#include "sender/server.h"

int main(int argc, char** argv) {
  CLI::App app{"weightcastd: broadcasts a trainer rank's weights to inference ranks"};
  weightcast::ServerOptions options;
  std::string init_config;
  std::string log_level = "info";
  std::string control_group, control_token_file, tls_cert, tls_key;
  app.add_option("--listen", options.listen,
                 "control address: unix:PATH (only this user, root and --control-group may "
                 "connect) or HOST:PORT (needs a control token)")
      ->capture_default_str();
  app.add_option("--control-group", control_group,
                 "unix socket: members of this group (name or gid) may use the daemon too");
  app.add_option("--control-token-file", control_token_file,
                 "TCP: file holding the token every call must carry (default: "
                 "$WEIGHTCAST_CONTROL_TOKEN)");
  app.add_flag("--allow-remote", options.allow_remote,
               "allow a --listen address that is not loopback (needs TLS)");
  app.add_option("--tls-cert", tls_cert, "TCP: PEM certificate chain served to clients");
  app.add_option("--tls-key", tls_key, "TCP: PEM private key of --tls-cert");
  std::string group_token_file;
  app.add_option("--init-config", init_config,
                 "text-format weightcast.v1.InitBroadcasterRequest applied at start");
  app.add_option("--token-file", group_token_file,
                 "--init-config: file holding the group token when the config has none "
                 "(default: $WEIGHTCAST_TOKEN)");
  std::string log_format = "text", metrics_listen;
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  app.add_option("--log-format", log_format, "text, or json (one object per line)")
      ->capture_default_str();
  app.add_option("--metrics-listen", metrics_listen,
                 "HOST:PORT serving /metrics (Prometheus) and /healthz (off when empty)");
  weightcast::AddStandardFlags(app, "weightcastd");
  if (std::optional<int> rc = weightcast::ParseCommandLine(app, argc, argv)) return *rc;
  if (absl::Status s = weightcast::ConfigureLogging(log_level, log_format); !s.ok()) {
    std::fprintf(stderr, "weightcastd: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (!control_group.empty()) {
    absl::StatusOr<gid_t> gid = weightcast::ParseGroup(control_group);
    if (!gid.ok()) {
      spdlog::error("--control-group: {}", std::string(gid.status().message()));
      return 2;
    }
    options.control_group = *gid;
  }
  absl::StatusOr<std::string> token =
      weightcast::ReadToken(control_token_file, weightcast::kControlTokenEnv);
  if (!token.ok()) {
    spdlog::error("--control-token-file: {}", std::string(token.status().message()));
    return 2;
  }
  options.control_token = *token;
  if (!tls_cert.empty() || !tls_key.empty()) {
    std::ifstream cert(tls_cert);
    std::stringstream pem;
    pem << cert.rdbuf();
    absl::StatusOr<std::string> key = weightcast::ReadSecretFile(tls_key);
    if (!cert || pem.str().empty() || !key.ok()) {
      spdlog::error("--tls-cert {} / --tls-key {}: {}", tls_cert, tls_key,
                    key.ok() ? std::string("the certificate is not readable")
                             : std::string(key.status().message()));
      return 2;
    }
    options.tls_cert_pem = pem.str();
    options.tls_key_pem = *key;
  }

  // Block the signals before any thread starts, then wait for them here.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<weightcast::Server>> server =
      weightcast::Server::BuildAndStart(options);
  if (!server.ok()) {
    spdlog::error("{}", server.status().ToString());
    return 2;
  }
  spdlog::info("weightcastd listening on {}", (*server)->address());
  weightcast::Broadcaster& core = (*server)->core();
  auto registry = std::make_shared<prometheus::Registry>();
  weightcast::SenderTelemetry telemetry(*registry);
  core.SetObserver([&telemetry](const weightcast::UpdateContext& ctx,
                                const weightcast::UpdateEvent& e) { telemetry.Observe(ctx, e); });
  std::unique_ptr<weightcast::OpsEndpoint> ops;
  if (!metrics_listen.empty()) {
    auto e = weightcast::OpsEndpoint::Start(
        metrics_listen, registry, [&core] { return weightcast::SenderHealth(core.GetStatus()); },
        [&core, &telemetry] { telemetry.Refresh(core.GetStatus()); });
    if (!e.ok()) {
      spdlog::error("--metrics-listen: {}", std::string(e.status().message()));
      return 2;
    }
    ops = *std::move(e);
    spdlog::info("metrics and health on http://{}/metrics, /healthz", ops->address());
  }
  if (!init_config.empty()) {
    std::ifstream in(init_config);
    std::stringstream text;
    text << in.rdbuf();
    weightcast::v1::InitBroadcasterRequest req;
    if (!in || !google::protobuf::TextFormat::ParseFromString(text.str(), &req)) {
      spdlog::error("--init-config {}: not a readable InitBroadcasterRequest text proto",
                    init_config);
      return 2;
    }
    if (req.token().empty()) {
      absl::StatusOr<std::string> t = weightcast::ReadToken(group_token_file);
      if (!t.ok()) {
        spdlog::error("--token-file: {}", std::string(t.status().message()));
        return 2;
      }
      req.set_token(*t);
    }
    auto r = (*server)->core().Init(weightcast::ConfigFromProto(req));
    if (!r.ok()) {
      spdlog::error("--init-config {}: {}", init_config, r.status().ToString());
      return 2;
    }
    spdlog::info("initialized as sender {} of world {}", r->first, r->second);
  }
  // systemd (Type=notify): listening, configured, ready for the orchestrator.
  sd_notify(0, ("READY=1\nSTATUS=listening on " + (*server)->address()).c_str());
  int sig = 0;
  sigwait(&signals, &sig);
  sd_notify(0, "STOPPING=1");
  spdlog::info("signal {}: shutting down", sig);
  (*server)->Shutdown(absl::Seconds(5));
  ops.reset();
  core.SetObserver(nullptr);
  return 0;
}
