#include "protocol/manifest_exchange.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "transport/gloo_transport.h"
#include "transport/host_as_device_transport.h"

namespace weightcast {
namespace {

SenderManifest Manifest(uint32_t rank, uint32_t num_senders) {
  std::vector<OutputTensor> outs = {
      CopyOf(TensorSpec{absl::StrCat("s", rank, ".w"), DType::kBF16, {10, 7}}, 0),
      CopyOf(TensorSpec{absl::StrCat("s", rank, ".b"), DType::kF32, {700}}, 1)};
  auto plan = PlanBuckets(outs, 4096, 0);   // the smallest: two buckets
  EXPECT_TRUE(plan.ok()) << plan.status();
  return MakeSenderManifest(5, rank, num_senders, outs, *plan, rank == 0 ? "{\"a\":1}" : "");
}

// Two senders and one receiver, each a thread with a gloo transport that
// says it moves device memory (as NCCL does): every rank gets the same
// merged manifest, and the manifests go through BroadcastHost only (never
// a device-memory Broadcast of host bytes).
TEST(ManifestExchangeTest, WorksOverADeviceMemoryTransport) {
  auto server = RendezvousServer::Start("127.0.0.1", 0, "tok");
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = absl::StrCat("127.0.0.1:", (*server)->bound_port());
  constexpr int kWorld = 3;
  constexpr uint32_t kSenders = 2;
  std::vector<std::unique_ptr<RendezvousClient>> clients;
  for (int r = 0; r < kWorld; ++r) clients.push_back(std::make_unique<RendezvousClient>(address, "tok"));
  std::vector<std::unique_ptr<HostAsDeviceTransport>> transports(kWorld);
  std::vector<absl::StatusOr<GlobalManifest>> results(kWorld, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) {
    threads.emplace_back([&, r] {
      auto gloo = GlooTransport::Connect({.rendezvous = clients[r].get(), .key_prefix = "g1/",
                                          .rank = r, .world_size = kWorld,
                                          .deadline = absl::Now() + absl::Seconds(10)});
      ASSERT_TRUE(gloo.ok()) << gloo.status();
      transports[r] = std::make_unique<HostAsDeviceTransport>(*std::move(gloo));
      const SenderManifest mine = Manifest(r, kSenders);
      results[r] = ExchangeManifests(*transports[r], kSenders, 5,
                                     r < static_cast<int>(kSenders) ? &mine : nullptr,
                                     absl::Seconds(10));
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < kWorld; ++r) {
    ASSERT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].status();
    EXPECT_EQ(transports[r]->device_broadcasts, 0) << "rank " << r;
    EXPECT_EQ(transports[r]->host_broadcasts, 2 * static_cast<int>(kSenders)) << "rank " << r;
    ASSERT_EQ(results[r]->tensors.size(), 4u);
    EXPECT_EQ(results[r]->tensors[0].spec.name, "s0.w");
    EXPECT_EQ(results[r]->tensors[3].spec.name, "s1.b");
    EXPECT_EQ(results[r]->config_json, "{\"a\":1}");
    EXPECT_EQ(results[r]->buckets.size(), results[0]->buckets.size());
    EXPECT_EQ(results[r]->payload_bytes, 2u * (10 * 7 * 2 + 700 * 4));
  }
}

}  // namespace
}  // namespace weightcast
