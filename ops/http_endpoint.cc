#include "ops/http_endpoint.h"

#include <chrono>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace weightcast {

absl::StatusOr<std::pair<std::string, int>> ParseHostPort(const std::string& address,
                                                          const std::string& what) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": '", address, "' is not HOST:PORT (PORT 0 to 65535)"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::make_pair(host, port);
}

absl::StatusOr<std::unique_ptr<OpsEndpoint>> OpsEndpoint::Start(
    const std::string& listen, std::shared_ptr<prometheus::Registry> registry,
    HealthProbe health, std::function<void()> before_scrape) {
  auto parsed = ParseHostPort(listen, "metrics address");
  if (!parsed.ok()) return parsed.status();
  const auto& [host, port] = *parsed;
  std::unique_ptr<OpsEndpoint> e(new OpsEndpoint());
  e->registry_ = std::move(registry);
  e->health_ = std::move(health);
  e->before_scrape_ = std::move(before_scrape);
  e->http_ = std::make_unique<httplib::Server>();
  // cpp-httplib's default also sets SO_REUSEPORT, which would let a second
  // process share the port (scrapes split between two daemons).
  e->http_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  OpsEndpoint* self = e.get();
  e->http_->Get("/metrics", [self](const httplib::Request&, httplib::Response& res) {
    if (self->before_scrape_) self->before_scrape_();
    const std::string text = prometheus::TextSerializer().Serialize(self->registry_->Collect());
    res.set_content(text, "text/plain; version=0.0.4; charset=utf-8");
  });
  e->http_->Get("/healthz", [self](const httplib::Request&, httplib::Response& res) {
    const Health h = self->health_ ? self->health_() : Health{.serving = true};
    nlohmann::json body = {{"status", h.serving ? "SERVING" : "NOT_SERVING"}};
    if (!h.serving) body["reason"] = h.reason;
    res.status = h.serving ? 200 : 503;
    res.set_content(body.dump() + "\n", "application/json");
  });
  int bound = port;
  const bool ok = port == 0 ? (bound = e->http_->bind_to_any_port(host)) > 0
                            : e->http_->bind_to_port(host, port);
  if (!ok) {
    return absl::AlreadyExistsError(absl::StrCat(
        "metrics address ", listen, ": cannot listen (in use, or not an address of this host)"));
  }
  e->address_ = absl::StrCat(listen.substr(0, listen.rfind(':')), ":", bound);
  e->thread_ = std::thread([self] { self->http_->listen_after_bind(); });
  // stop() is a no-op until the loop runs: a Start followed at once by the
  // destructor would otherwise leave the thread listening for ever.
  while (!e->http_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return e;
}

OpsEndpoint::~OpsEndpoint() {
  if (http_ != nullptr) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace weightcast
