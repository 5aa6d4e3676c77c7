// The operations endpoint: one HTTP listener per process (weightcastd,
// weightcast-recv) serving
//   GET /metrics  the process's metrics in the Prometheus text format
//   GET /healthz  200 when serving, 503 when not, with a JSON body saying why
// Off unless an address is given; read-only, so any interface may be used
// (Prometheus scrapes from elsewhere).
#ifndef WEIGHTCAST_OPS_HTTP_ENDPOINT_H_
#define WEIGHTCAST_OPS_HTTP_ENDPOINT_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace prometheus {
class Registry;
}
namespace httplib {
class Server;
}

namespace weightcast {

struct Health {
  bool serving = false;
  std::string reason;  // why not serving (empty when serving)
};
// Called per /healthz request, on the endpoint's thread; must be cheap.
using HealthProbe = std::function<Health()>;

// "HOST:PORT" (PORT 0: any free port) into its parts; INVALID_ARGUMENT
// naming `what` and the address otherwise.
[[nodiscard]] absl::StatusOr<std::pair<std::string, int>> ParseHostPort(const std::string& address,
                                                                        const std::string& what);

class OpsEndpoint {
 public:
  // Listens on `listen` ("HOST:PORT") alone: ALREADY_EXISTS when the
  // address is taken, INVALID_ARGUMENT when malformed.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<OpsEndpoint>> Start(
      const std::string& listen, std::shared_ptr<prometheus::Registry> registry,
      HealthProbe health, std::function<void()> before_scrape = nullptr);
  ~OpsEndpoint();
  OpsEndpoint(const OpsEndpoint&) = delete;
  OpsEndpoint& operator=(const OpsEndpoint&) = delete;

  // HOST:PORT with the port bound (when 0 was asked).
  [[nodiscard]] const std::string& address() const { return address_; }

 private:
  OpsEndpoint() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  HealthProbe health_;
  std::function<void()> before_scrape_;  // refreshes gauges read from state
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::string address_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_OPS_HTTP_ENDPOINT_H_
