// weightcastd: the sidecar next to one trainer rank. Parses flags into
// ServerOptions, starts the Server, and shuts it down on SIGTERM/SIGINT.
//
//   weightcastd --listen unix:/run/weightcast/rank0.sock
//   weightcastd --listen 127.0.0.1:50151 --init-config init.textproto
#include <csignal>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <google/protobuf/text_format.h>
#include <spdlog/spdlog.h>

#include "sender/broadcaster_service.h"
#include "sender/server.h"

int main(int argc, char** argv) {
  CLI::App app{"weightcastd: broadcasts a trainer rank's weights to inference ranks"};
  weightcast::ServerOptions options;
  std::string init_config;
  std::string log_level = "info";
  app.add_option("--listen", options.listen,
                 "control address: unix:PATH or 127.0.0.1:PORT")
      ->capture_default_str();
  app.add_flag("--allow-remote", options.allow_remote,
               "allow a --listen address that is not loopback");
  app.add_option("--init-config", init_config,
                 "text-format weightcast.v1.InitBroadcasterRequest applied at start");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));

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
    auto r = (*server)->core().Init(weightcast::ConfigFromProto(req));
    if (!r.ok()) {
      spdlog::error("--init-config {}: {}", init_config, r.status().ToString());
      return 2;
    }
    spdlog::info("initialized as sender {} of world {}", r->first, r->second);
  }
  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: shutting down", sig);
  (*server)->Shutdown(absl::Seconds(5));
  return 0;
}
