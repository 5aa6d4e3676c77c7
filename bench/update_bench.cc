// CPU benchmarks, each a ratio measured in this run (never a pass/fail on
// wall time):
//   1. pack:  PackOutputRange of a model's tensors into buckets vs memcpy of
//             the same bytes (goal >= 0.8 on the CPU path); and the same pack
//             with the non-finite guard (the sender's default) vs without
//             (allow_non_finite), interleaved in one loop;
//   2. fp8:   block FP8 quantization (CPU reference) vs memcpy of its input,
//             and with the guard vs without;
//   3. update: a whole update through Broadcaster -> gloo -> Receivers vs a
//             raw GlooTransport broadcast of the same buckets, same ranks
//             (goal <= 1.10 x raw); and the update with the guard (default)
//             vs with allow_non_finite;
//   4. staging: the sender's staging allocation vs 2 x bucket_bytes.
// Usage: update_bench [--mib 256] [--bucket-mib 32] [--receivers 2] [--out FILE]
#include <sys/stat.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>

#include "bench/timing.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/finite_guard.h"
#include "kernels/fp8_reference.h"
#include "kernels/pack_reference.h"
#include "protocol/bucket_plan.h"
#include "protocol/rendezvous_store.h"
#include "receiver/receiver.h"
#include "sender/broadcaster.h"
#include "transport/gloo_transport.h"

namespace weightcast {
namespace {

using bench::Best;
using bench::Now;

class CountingSink final : public Sink {
 public:
  absl::Status Begin(const GlobalManifest&) override { bytes = 0; return absl::OkStatus(); }
  absl::Status Write(uint32_t, uint64_t, const std::byte*, uint64_t n) override {
    bytes += n;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> Commit() override { return std::string("counted"); }
  void Abort() override {}
  uint64_t bytes = 0;
};

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) {
  using namespace weightcast;
  uint64_t mib = 256, bucket_mib = 32;
  int receivers = 2;
  std::string out_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--mib") mib = std::stoull(argv[i + 1]);
    if (a == "--bucket-mib") bucket_mib = std::stoull(argv[i + 1]);
    if (a == "--receivers") receivers = std::stoi(argv[i + 1]);
    if (a == "--out") out_path = argv[i + 1];
  }
  const uint64_t bucket = bucket_mib << 20;
  // A model of bf16 matrices of uneven sizes, in a shared-memory file.
  const std::string dir = "/dev/shm/weightcast-bench-" + std::to_string(getpid());
  mkdir(dir.c_str(), 0700);
  const std::string file = dir + "/model.bin";
  std::vector<TensorRegistration> regs;
  std::vector<TensorSpec> specs;
  {
    std::ofstream f(file, std::ios::binary);
    std::mt19937 rng(1);
    uint64_t off = 0;
    std::vector<uint16_t> buf;
    for (int i = 0; off < (mib << 20); ++i) {
      TensorSpec s{absl::StrCat("model.layers.", i, ".mlp.down_proj.weight"), DType::kBF16,
                   {1000 + 37 * (i % 7), 2048}};
      buf.resize(s.NumElements());
      for (auto& x : buf) x = static_cast<uint16_t>(0x3C00 + rng() % 0x400);
      f.write(reinterpret_cast<const char*>(buf.data()), s.ByteSize());
      regs.push_back({s, ShmLocation{file, off}});
      specs.push_back(s);
      off += s.ByteSize();
    }
  }
  auto mapped = MappedFile::Open(file);
  std::vector<HostSource> sources;
  for (const auto& r : regs) {
    sources.push_back({r.spec, *(*mapped)->Range(std::get<ShmLocation>(r.location).offset, r.spec.ByteSize())});
  }
  std::vector<OutputTensor> outs;
  for (uint32_t i = 0; i < specs.size(); ++i) outs.push_back(CopyOf(specs[i], i));
  auto plan = PlanBuckets(outs, bucket, 0);
  const uint64_t total = plan->payload_bytes;

  // 1. pack vs memcpy; with the guard vs without (best of 5 each, the two
  // alternating so both see the same machine).
  std::vector<std::byte> staging(bucket);
  FiniteGuard guard;
  auto pack_all = [&](FiniteGuard* g) {
    for (const Bucket& b : plan->buckets)
      for (const Segment& s : b.segments)
        (void)PackOutputRange(outs[s.tensor], sources, s.tensor_offset, s.bytes,
                              staging.data() + s.bucket_offset, g);
  };
  double t_pack = 1e30, t_pack_guard = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    t_pack = std::min(t_pack, Best(1, [&] { pack_all(nullptr); }));
    t_pack_guard = std::min(t_pack_guard, Best(1, [&] { pack_all(&guard); }));
  }
  if (guard.found()) {
    std::cerr << "the bench model holds a non-finite value\n";
    return 1;
  }
  const double t_memcpy = Best(3, [&] {
    for (const Bucket& b : plan->buckets)
      for (const Segment& s : b.segments)
        std::memcpy(staging.data() + s.bucket_offset,
                    sources[s.tensor].data + s.tensor_offset, s.bytes);
  });
  // 2. FP8 quantization of one tensor vs memcpy of its bytes.
  OutputTensor q = outs[0];
  q.spec.dtype = DType::kF8E4M3;
  q.quant = QuantKind::kFp8Weight;
  q.q_batch = 1;
  q.q_rows = specs[0].shape[0];
  q.q_cols = specs[0].shape[1];
  std::vector<std::byte> qbuf(q.spec.ByteSize());
  double t_fp8 = 1e30, t_fp8_guard = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    t_fp8 = std::min(t_fp8, Best(1, [&] {
      (void)PackOutputRange(q, sources, 0, qbuf.size(), qbuf.data());
    }));
    t_fp8_guard = std::min(t_fp8_guard, Best(1, [&] {
      (void)PackOutputRange(q, sources, 0, qbuf.size(), qbuf.data(), &guard);
    }));
  }
  const double t_fp8_copy = Best(3, [&] { std::memcpy(staging.data(), sources[0].data, specs[0].ByteSize()); });

  // 3a. Raw gloo broadcast of the same buckets.
  auto server = RendezvousServer::Start("127.0.0.1", 0, "tok");
  const std::string address = absl::StrCat("127.0.0.1:", (*server)->bound_port());
  const int world = 1 + receivers;
  double t_raw = 0;
  {
    std::vector<std::unique_ptr<GlooTransport>> g(world);
    std::vector<std::unique_ptr<RendezvousClient>> clients;
    for (int r = 0; r < world; ++r) clients.push_back(std::make_unique<RendezvousClient>(address, "tok"));
    std::vector<std::thread> th;
    for (int r = 0; r < world; ++r) {
      th.emplace_back([&, r] {
        g[r] = *GlooTransport::Connect({.rendezvous = clients[r].get(), .key_prefix = "raw/",
                                        .rank = r, .world_size = world,
                                        .deadline = absl::Now() + absl::Seconds(30)});
      });
    }
    for (auto& t : th) t.join();
    th.clear();
    std::vector<std::vector<std::byte>> bufs(world, std::vector<std::byte>(bucket + 32));
    t_raw = Best(2, [&] {
      std::vector<std::thread> ts;
      for (int r = 0; r < world; ++r) {
        ts.emplace_back([&, r] {
          for (const Bucket& b : plan->buckets)
            (void)g[r]->Broadcast(bufs[r].data(), b.bytes + 32, 0, absl::Now() + absl::Seconds(60));
        });
      }
      for (auto& t : ts) t.join();
    });
  }
  (*server)->Shutdown();

  // 3b. The same through Broadcaster -> Receivers.
  Broadcaster b;
  BroadcasterConfig cfg;
  cfg.token = "tok";
  cfg.num_senders = 1;
  cfg.inference_world_size = receivers;
  cfg.bucket_bytes = bucket;
  cfg.timeout_s = 60;
  cfg.format.family = "dense";
  if (!b.Init(cfg).ok() || !b.Register(regs, "", false).ok()) return 1;
  const std::string raddr = absl::StrCat("127.0.0.1:", b.rendezvous_port());
  std::vector<std::unique_ptr<RendezvousKeyValueStore>> stores;
  std::vector<std::unique_ptr<Receiver>> rs;
  for (int j = 0; j < receivers; ++j) {
    stores.push_back(std::make_unique<RendezvousKeyValueStore>(raddr, "tok"));
    rs.push_back(*Receiver::Create({.rank = 1 + j, .op_timeout = absl::Seconds(60)},
                                   stores.back().get(),
                                   MakeTransportFactory({.rendezvous_address = raddr, .token = "tok"})));
  }
  uint64_t version = 0;
  bool ok = true;
  auto one_update = [&] {
    ++version;
    std::vector<std::thread> ts;
    for (int j = 0; j < receivers; ++j) {
      ts.emplace_back([&, j] {
        CountingSink sink;
        auto r = rs[j]->ReceiveNext(sink, absl::Seconds(60));
        ok = ok && r.ok() && r->has_value() && (*r)->committed && sink.bytes == total;
      });
    }
    ok = ok && b.Update(version, [](const UpdateEvent&) {}).ok();
    for (auto& t : ts) t.join();
  };
  // The guard on (the default), off (allow_non_finite), on again: best of
  // each, so both see the box's quiet and busy moments. Re-initialising on
  // the same rendezvous port: the receivers follow the new incarnation.
  const uint32_t port = b.rendezvous_port();
  double t_update = 1e30, t_update_open = 1e30;
  for (bool allow : {false, true, false}) {
    if (allow || t_update < 1e30) {
      b.Abort();
      BroadcasterConfig c = cfg;
      c.port = port;
      c.allow_non_finite = allow;
      if (!b.Init(c).ok()) return 1;
    }
    one_update();  // forms the group
    double& t = allow ? t_update_open : t_update;
    t = std::min(t, Best(2, one_update));
  }
  b.Abort();
  std::remove(file.c_str());
  rmdir(dir.c_str());
  if (!ok) {
    std::cerr << "update failed\n";
    return 1;
  }

  const double gb = total / 1e9;
  std::string report = absl::StrFormat(
      "model %.0f MiB bf16 (%d tensors), buckets %d MiB (%d), 1 sender -> %d receivers, gloo loopback, "
      "threads in one process\n"
      "| benchmark | weightcast | baseline | ratio | goal |\n|---|---|---|---|---|\n"
      "| pack vs memcpy | %.2f GB/s | %.2f GB/s | %.2f | >= 0.8 |\n"
      "| pack with the non-finite guard vs without | %.2f GB/s | %.2f GB/s | %.3f | report (the guard's cost) |\n"
      "| fp8 quantize (CPU reference) vs memcpy | %.2f GB/s | %.2f GB/s | %.2f | (GPU kernel's job) |\n"
      "| fp8 quantize with the guard vs without | %.2f GB/s | %.2f GB/s | %.3f | report |\n"
      "| update vs raw gloo broadcast of the same buckets | %.3f s | %.3f s | %.2f x | <= 1.10 x |\n"
      "| update (guard on, the default) vs allow_non_finite | %.3f s | %.3f s | %.2f x | report |\n"
      "| sender staging vs 2 x bucket_bytes | %d MiB | %d MiB | %.2f | 1.0 by construction |\n",
      total / 1048576.0, (int)specs.size(), (int)bucket_mib, (int)plan->buckets.size(), receivers,
      gb / t_pack, gb / t_memcpy, t_memcpy / t_pack, gb / t_pack_guard, gb / t_pack,
      t_pack / t_pack_guard, specs[0].ByteSize() / 1e9 / t_fp8,
      specs[0].ByteSize() / 1e9 / t_fp8_copy, t_fp8_copy / t_fp8,
      specs[0].ByteSize() / 1e9 / t_fp8_guard, specs[0].ByteSize() / 1e9 / t_fp8,
      t_fp8 / t_fp8_guard, t_update, t_raw, t_update / t_raw, t_update, t_update_open,
      t_update / t_update_open,
      (int)(2 * (bucket + 32) >> 20), (int)(2 * bucket >> 20), 1.0);
  std::cout << report;
  if (!out_path.empty()) std::ofstream(out_path, std::ios::app) << report << "\n";
  return 0;
}
