#include "ops/http_endpoint.h"

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <atomic>

#include "gtest/gtest.h"

namespace weightcast {
namespace {

std::pair<std::string, int> Split(const std::string& address) {
  auto p = ParseHostPort(address, "test");
  EXPECT_TRUE(p.ok()) << p.status();
  return *p;
}

TEST(OpsEndpointTest, ServesTheRegistryAndTheProbesAnswer) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter()
                     .Name("weightcast_test_things_total")
                     .Help("things")
                     .Register(*registry);
  family.Add({{"kind", "a"}}).Increment(3);
  std::atomic<bool> serving{true};
  auto e = OpsEndpoint::Start("127.0.0.1:0", registry, [&] {
    return Health{.serving = serving, .reason = serving ? "" : "group broken at version 7"};
  });
  ASSERT_TRUE(e.ok()) << e.status();
  auto [host, port] = Split((*e)->address());
  ASSERT_GT(port, 0);
  httplib::Client client(host, port);
  auto m = client.Get("/metrics");
  ASSERT_TRUE(m) << httplib::to_string(m.error());
  EXPECT_EQ(m->status, 200);
  EXPECT_NE(m->body.find("weightcast_test_things_total{kind=\"a\"} 3"), std::string::npos)
      << m->body;
  auto h = client.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(nlohmann::json::parse(h->body)["status"], "SERVING");
  serving = false;
  h = client.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 503);
  auto body = nlohmann::json::parse(h->body);
  EXPECT_EQ(body["status"], "NOT_SERVING");
  EXPECT_EQ(body["reason"], "group broken at version 7");
  EXPECT_EQ(client.Get("/nothing")->status, 404);
}

TEST(OpsEndpointTest, ATakenAddressOrAMalformedOneIsRefused) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto first = OpsEndpoint::Start("127.0.0.1:0", registry, nullptr);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = OpsEndpoint::Start((*first)->address(), registry, nullptr);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists) << second.status();
  EXPECT_NE(second.status().message().find((*first)->address()), std::string::npos);
  for (const char* bad : {"127.0.0.1", ":9000", "127.0.0.1:65536", "127.0.0.1:-1", "h:x"}) {
    auto r = OpsEndpoint::Start(bad, registry, nullptr);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find(bad), std::string::npos) << r.status();
  }
}

TEST(OpsEndpointTest, StoppingReleasesTheAddress) {
  auto registry = std::make_shared<prometheus::Registry>();
  std::string address;
  {
    auto e = OpsEndpoint::Start("127.0.0.1:0", registry, nullptr);
    ASSERT_TRUE(e.ok());
    address = (*e)->address();
  }
  auto again = OpsEndpoint::Start(address, registry, nullptr);
  EXPECT_TRUE(again.ok()) << again.status();
}

}  // namespace
}  // namespace weightcast
