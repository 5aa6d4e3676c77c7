// The Broadcaster core driven directly (no gRPC), with an in-process
// Receiver and a CallbackSink on the other side of a real gloo group.
#include "sender/broadcaster.h"

#include <sys/stat.h>

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/fp8_reference.h"
#include "kernels/gpu_device.h"
#include "protocol/rendezvous_store.h"
#include "receiver/callback_sink.h"
#include "receiver/receiver.h"

namespace weightcast {
namespace {

std::string TmpDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

// A trainer's shared-memory file: tensors back to back, random bf16 bits.
struct ShmFile {
  std::string path;
  std::vector<TensorRegistration> regs;
  std::map<std::string, std::vector<uint16_t>> values;

  ShmFile(const std::string& name, const std::vector<std::pair<std::string, std::vector<int64_t>>>& t,
          uint64_t seed) {
    path = TmpDir() + "/" + name;
    std::ofstream out(path, std::ios::binary);
    std::mt19937 rng(seed);
    uint64_t offset = 0;
    for (const auto& [n, shape] : t) {
      TensorSpec spec{n, DType::kBF16, shape};
      std::vector<uint16_t> v(spec.NumElements());
      // Finite bf16 values in [-2, 2).
      for (auto& x : v) x = static_cast<uint16_t>(0x3C00 + (rng() % 0x0400)) | (rng() % 2 ? 0x8000 : 0);
      out.write(reinterpret_cast<const char*>(v.data()), spec.ByteSize());
      regs.push_back({spec, ShmLocation{path, offset}});
      offset += spec.ByteSize();
      values[n] = std::move(v);
    }
  }
};

struct Collected {
  std::map<std::string, std::pair<TensorSpec, std::vector<std::byte>>> tensors;
  int begins = 0, commits = 0, aborts = 0;
};

TensorCallbacks Collect(Collected* c) {
  TensorCallbacks cb;
  cb.begin = [c](uint64_t, const GlobalManifest&) {
    ++c->begins;
    c->tensors.clear();
    return absl::OkStatus();
  };
  cb.tensor = [c](const ReceivedTensor& t) {
    c->tensors[t.spec->name] = {*t.spec, std::vector<std::byte>(t.data, t.data + t.bytes)};
    return absl::OkStatus();
  };
  cb.commit = [c](uint64_t v) -> absl::StatusOr<std::string> {
    ++c->commits;
    return absl::StrCat("v", v);
  };
  cb.abort = [c](uint64_t) { ++c->aborts; };
  return cb;
}

class BroadcasterTest : public ::testing::Test {
 protected:
  BroadcasterConfig Config() {
    BroadcasterConfig c;
    c.host = "127.0.0.1";
    c.port = 0;
    c.num_senders = 1;
    c.inference_world_size = 1;
    c.timeout_s = 10;
    c.bucket_bytes = 64 << 10;
    c.token = "t";
    c.format.family = "qwen3_moe";
    return c;
  }
  // Runs one update on `b` while a receiver (rank 1) takes it into `c`.
  absl::Status UpdateWithReceiver(Broadcaster& b, uint64_t v, Collected* c,
                                  std::vector<UpdateEvent>* events) {
    const std::string address = absl::StrCat("127.0.0.1:", b.rendezvous_port());
    RendezvousKeyValueStore store(address, "t");
    auto r = Receiver::Create({.rank = 1, .op_timeout = absl::Seconds(10)}, &store,
                              MakeTransportFactory({.rendezvous_address = address, .token = "t"}));
    EXPECT_TRUE(r.ok()) << r.status();
    std::thread recv([&] {
      CallbackSink sink(Collect(c));
      auto res = (*r)->ReceiveNext(sink, absl::Seconds(10));
      ASSERT_TRUE(res.ok()) << res.status();
      ASSERT_TRUE(res->has_value());
    });
    absl::Status s = b.Update(v, [&](const UpdateEvent& e) { events->push_back(e); });
    recv.join();
    return s;
  }
};

TEST_F(BroadcasterTest, UpdatesArriveWholeAndEventsComeInOrder) {
  ShmFile f("a.bin", {{"model.embed_tokens.weight", {100, 72}},
                      {"model.layers.0.mlp.experts.0.gate_proj.weight", {40, 72}},
                      {"model.layers.0.mlp.experts.0.up_proj.weight", {40, 72}},
                      {"model.layers.0.mlp.experts.0.down_proj.weight", {72, 40}},
                      {"lm_head.weight", {1000, 72}}},
            1);
  Broadcaster b;
  ASSERT_TRUE(b.Init(Config()).ok());
  ASSERT_TRUE(b.Register(f.regs, "", false).ok());
  Collected c;
  std::vector<UpdateEvent> events;
  ASSERT_TRUE(UpdateWithReceiver(b, 1, &c, &events).ok());
  ASSERT_EQ(c.tensors.size(), 5u);
  for (const auto& [name, v] : f.values) {
    const auto& got = c.tensors.at(name).second;
    ASSERT_EQ(got.size(), v.size() * 2) << name;
    EXPECT_EQ(std::memcmp(got.data(), v.data(), got.size()), 0) << name;
  }
  EXPECT_EQ(c.begins, 1);
  EXPECT_EQ(c.commits, 1);
  ASSERT_GE(events.size(), 4u);
  EXPECT_TRUE(std::holds_alternative<PlannedEvent>(events.front()));
  EXPECT_TRUE(std::holds_alternative<CommittedEvent>(events.back()));
  int buckets = 0, released_at = -1;
  for (size_t i = 0; i < events.size(); ++i) {
    if (std::holds_alternative<BucketSentEvent>(events[i])) ++buckets;
    if (std::holds_alternative<SourceReleasedEvent>(events[i])) released_at = buckets;
  }
  // lm_head alone is 144 KB > 64 KiB: split over buckets.
  EXPECT_EQ(buckets, static_cast<int>(std::get<PlannedEvent>(events.front()).num_buckets));
  EXPECT_GE(buckets, 3);
  // Released before the last bucket went out (it was packed ahead).
  EXPECT_EQ(released_at, buckets - 1);
  EXPECT_EQ(b.GetStatus().last_committed_version, 1u);
  // Versions must increase, and stay below 2^63 (-1 read as unsigned is
  // refused, so later versions are not all stale).
  EXPECT_EQ(b.Update(1, [](const UpdateEvent&) {}).code(), absl::StatusCode::kFailedPrecondition);
  const absl::Status wrapped = b.Update(~uint64_t{0}, [](const UpdateEvent&) {});
  EXPECT_EQ(wrapped.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrapped.message().find("exceeds the largest version"), std::string::npos);
  EXPECT_EQ(b.GetStatus().last_committed_version, 1u);
  ASSERT_TRUE(UpdateWithReceiver(b, 2, &c, &events).ok());
}

TEST_F(BroadcasterTest, Fp8UpdateMatchesTheCpuReference) {
  ShmFile f("q.bin", {{"model.layers.0.self_attn.q_proj.weight", {200, 136}},
                      {"model.layers.0.input_layernorm.weight", {136}}},
            2);
  Broadcaster b;
  BroadcasterConfig cfg = Config();
  cfg.format.quant_method = "fp8-block";
  ASSERT_TRUE(b.Init(cfg).ok());
  ASSERT_TRUE(b.Register(f.regs, "", false).ok());
  Collected c;
  std::vector<UpdateEvent> events;
  ASSERT_TRUE(UpdateWithReceiver(b, 1, &c, &events).ok());
  const std::string w = "model.layers.0.self_attn.q_proj.weight";
  ASSERT_TRUE(c.tensors.count(w) && c.tensors.count(w + "_scale_inv"));
  EXPECT_EQ(c.tensors[w].first.dtype, DType::kF8E4M3);
  EXPECT_EQ(c.tensors[w + "_scale_inv"].first.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(c.tensors["model.layers.0.input_layernorm.weight"].first.dtype, DType::kBF16);
  std::vector<float> vals;
  for (uint16_t x : f.values[w]) vals.push_back(Bf16ToFloat(x));
  std::vector<uint8_t> q(vals.size());
  std::vector<float> scales(4);
  QuantizeRows(vals.data(), 0, 200, 136, Fp8Options{}, q.data(), scales.data());
  EXPECT_EQ(std::memcmp(c.tensors[w].second.data(), q.data(), q.size()), 0);
  EXPECT_EQ(std::memcmp(c.tensors[w + "_scale_inv"].second.data(), scales.data(), 16), 0);
}

// The GPU data plane's host logic end to end (issue 12): the same updates,
// plain and block FP8, through an nccl group (senders' CudaBucketPacker
// uploading host sources, receivers' CudaBucketLanding and the device path
// of CallbackSink) and through gloo (the CPU path) must deliver the same
// bytes. It runs on the host twin (--define=cuda=host, scripts/test), where
// an nccl group goes over gloo with the CUDA calls on the host; on a GPU two
// NCCL ranks cannot share a device in one process (test_gpu_e2e.py covers
// that machine).
TEST_F(BroadcasterTest, TheDevicePathDeliversWhatTheHostPathDoes) {
#ifndef WEIGHTCAST_HOST_TWIN
  GTEST_SKIP() << "runs on the host twin (bazel test --define=cuda=host; scripts/test does)";
#else
  for (const char* quant : {"", "fp8-block"}) {
    ShmFile f("d.bin", {{"model.embed_tokens.weight", {100, 72}},
                        {"model.layers.0.self_attn.q_proj.weight", {200, 136}},
                        {"model.layers.0.mlp.experts.0.gate_proj.weight", {40, 72}},
                        {"model.layers.0.mlp.experts.0.up_proj.weight", {40, 72}},
                        {"model.layers.0.mlp.experts.0.down_proj.weight", {72, 40}},
                        {"model.layers.0.input_layernorm.weight", {136}},
                        {"lm_head.weight", {1000, 72}}},
              3);
    std::map<std::string, Collected> got;
    for (const char* transport : {"gloo", "nccl"}) {
      Broadcaster b;
      BroadcasterConfig cfg = Config();
      cfg.transport = transport;
      cfg.format.quant_method = quant;
      ASSERT_TRUE(b.Init(cfg).ok()) << transport;
      ASSERT_TRUE(b.Register(f.regs, "", false).ok());
      std::vector<UpdateEvent> events;
      for (uint64_t v = 1; v <= 2; ++v) {
        const absl::Status s = UpdateWithReceiver(b, v, &got[transport], &events);
        ASSERT_TRUE(s.ok()) << transport << " " << quant << " version " << v << ": " << s;
      }
      EXPECT_EQ(got[transport].commits, 2) << transport;
    }
    const auto& host = got["gloo"].tensors;
    const auto& device = got["nccl"].tensors;
    ASSERT_EQ(host.size(), device.size()) << quant;
    ASSERT_GE(host.size(), 7u) << quant;
    for (const auto& [name, t] : host) {
      ASSERT_TRUE(device.count(name)) << quant << " " << name;
      EXPECT_EQ(device.at(name).first.shape, t.first.shape) << quant << " " << name;
      EXPECT_EQ(device.at(name).second, t.second) << quant << " " << name;
    }
  }
#endif
}

// The non-finite guard end to end in one process: a trainer's +inf makes the
// update fail naming the tensor and element, the receiver aborts (keeps
// version 1) and the group stays in step (same generation); with
// allow_non_finite the same bytes commit.
TEST_F(BroadcasterTest, NonFiniteSourceIsVotedDownAndAllowNonFiniteLetsItThrough) {
  const std::string down = "model.layers.0.self_attn.o_proj.weight";
  ShmFile f("nf.bin", {{"model.embed_tokens.weight", {100, 72}}, {down, {72, 40}},
                       {"lm_head.weight", {1000, 72}}},
            3);
  Broadcaster b;
  ASSERT_TRUE(b.Init(Config()).ok());
  ASSERT_TRUE(b.Register(f.regs, "", false).ok());
  const std::string address = absl::StrCat("127.0.0.1:", b.rendezvous_port());
  RendezvousKeyValueStore store(address, "t");
  auto r = Receiver::Create({.rank = 1, .op_timeout = absl::Seconds(10)}, &store,
                            MakeTransportFactory({.rendezvous_address = address, .token = "t"}));
  ASSERT_TRUE(r.ok()) << r.status();
  Collected c;
  auto update = [&](uint64_t v, bool* committed) {
    std::thread recv([&] {
      CallbackSink sink(Collect(&c));
      auto res = (*r)->ReceiveNext(sink, absl::Seconds(10));
      ASSERT_TRUE(res.ok()) << res.status();
      ASSERT_TRUE(res->has_value());
      *committed = (*res)->committed;
    });
    absl::Status s = b.Update(v, [](const UpdateEvent&) {});
    recv.join();
    return s;
  };
  bool committed = false;
  ASSERT_TRUE(update(1, &committed).ok());
  ASSERT_TRUE(committed);
  const uint64_t generation = b.GetStatus().generation;

  // +inf at element 1234 of down_proj, in the trainer's file.
  const uint64_t down_offset = 100 * 72 * 2;
  {
    std::fstream io(f.path, std::ios::binary | std::ios::in | std::ios::out);
    const uint16_t inf = 0x7F80;
    io.seekp(down_offset + 1234 * 2);
    io.write(reinterpret_cast<const char*>(&inf), 2);
  }
  absl::Status refused = update(2, &committed);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_NE(refused.message().find("tensor '" + down + "': non-finite value (+inf) at element 1234"),
            std::string::npos)
      << refused;
  EXPECT_FALSE(committed);
  EXPECT_EQ(c.commits, 1);
  EXPECT_EQ(c.aborts, 1);
  EXPECT_EQ(b.GetStatus().last_committed_version, 1u);
  EXPECT_EQ(b.GetStatus().generation, generation);  // nothing broke

  // Version 2 again, the guard still on: refused again (the group in step).
  EXPECT_EQ(update(2, &committed).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b.GetStatus().generation, generation);

  const uint32_t port = b.rendezvous_port();
  b.Abort();  // no update running: it only uninitialises
  BroadcasterConfig allow = Config();
  allow.allow_non_finite = true;
  allow.port = port;
  // A new rendezvous incarnation: the receiver follows it.
  const auto init = b.Init(allow);
  ASSERT_TRUE(init.ok()) << init.status();
  ASSERT_TRUE(update(3, &committed).ok());
  EXPECT_TRUE(committed);
  const auto& got = c.tensors.at(down).second;
  uint16_t v;
  std::memcpy(&v, got.data() + 1234 * 2, 2);
  EXPECT_EQ(v, 0x7F80);
}

TEST_F(BroadcasterTest, ASourceTruncatedOrWrittenWhileReadIsVotedDownAndTheDaemonLives) {
  ShmFile f("shrink.bin", {{"model.embed_tokens.weight", {100, 72}},
                           {"lm_head.weight", {1000, 72}}},
            5);
  Broadcaster b;
  ASSERT_TRUE(b.Init(Config()).ok());
  ASSERT_TRUE(b.Register(f.regs, "", false).ok());
  const std::string address = absl::StrCat("127.0.0.1:", b.rendezvous_port());
  RendezvousKeyValueStore store(address, "t");
  auto r = Receiver::Create({.rank = 1, .op_timeout = absl::Seconds(10)}, &store,
                            MakeTransportFactory({.rendezvous_address = address, .token = "t"}));
  ASSERT_TRUE(r.ok()) << r.status();
  Collected c;
  // `meddle` runs once the update is planned, before a source byte is read:
  // the trainer breaking the contract in the middle of an update.
  auto update = [&](uint64_t v, const std::function<void()>& meddle, bool* committed) {
    std::thread recv([&] {
      CallbackSink sink(Collect(&c));
      auto res = (*r)->ReceiveNext(sink, absl::Seconds(10));
      ASSERT_TRUE(res.ok()) << res.status();
      ASSERT_TRUE(res->has_value());
      *committed = (*res)->committed;
    });
    absl::Status s = b.Update(v, [&](const UpdateEvent& e) {
      if (std::holds_alternative<PlannedEvent>(e)) meddle();
    });
    recv.join();
    return s;
  };
  bool committed = true;
  // Truncated: the packer's reads past the new end would raise SIGBUS.
  absl::Status s = update(1, [&] { ASSERT_EQ(::truncate(f.path.c_str(), 4096), 0); }, &committed);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find(f.path + ": "), std::string::npos) << s;
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s;
  EXPECT_FALSE(committed);
  EXPECT_EQ(c.commits, 0);
  EXPECT_EQ(b.GetStatus().state, "idle");

  // A fresh file, registered again, then written (write(2)) mid-update.
  ShmFile g("written.bin", {{"model.embed_tokens.weight", {100, 72}},
                            {"lm_head.weight", {1000, 72}}},
            6);
  ASSERT_TRUE(b.Register(g.regs, "", true).ok());
  s = update(1, [&] {
    std::fstream io(g.path, std::ios::binary | std::ios::in | std::ios::out);
    io.seekp(100);
    io.write("xy", 2);
  }, &committed);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find(g.path + ": written while this update read it"), std::string::npos)
      << s;
  EXPECT_FALSE(committed);
  // Left alone, the next update commits what the file holds.
  ASSERT_TRUE(update(2, [] {}, &committed).ok());
  EXPECT_TRUE(committed);
  EXPECT_EQ(c.commits, 1);
}

TEST_F(BroadcasterTest, InitIsIdempotentValidatesAndAbortAllowsReinit) {
  Broadcaster b;
  BroadcasterConfig cfg = Config();
  ASSERT_TRUE(b.Init(cfg).ok());
  EXPECT_TRUE(b.Init(cfg).ok());
  BroadcasterConfig other = cfg;
  other.bucket_bytes = 1 << 20;
  EXPECT_EQ(b.Init(other).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(b.Abort());
  EXPECT_TRUE(b.Init(other).ok());
  Broadcaster fresh;
  BroadcasterConfig bad = cfg;
  bad.format.source_layout = "zigzag";
  auto r = fresh.Init(bad);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("source_layout"), std::string::npos);
  EXPECT_EQ(fresh.GetStatus().state, "uninitialized");
  for (double t : {-1.0, std::nan(""), 1e9}) {
    BroadcasterConfig bad_timeout = cfg;
    bad_timeout.timeout_s = t;
    auto rt = fresh.Init(bad_timeout);
    ASSERT_EQ(rt.status().code(), absl::StatusCode::kInvalidArgument) << t;
    EXPECT_NE(rt.status().message().find("timeout_s"), std::string::npos);
  }
  // A group without a token would let anyone who reaches its port write
  // its rendezvous keys.
  BroadcasterConfig no_token = cfg;
  no_token.token = "";
  auto rn = fresh.Init(no_token);
  ASSERT_EQ(rn.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(rn.status().message().find("token"), std::string::npos);
}

TEST_F(BroadcasterTest, AbortEndsAnUpdateWaitingForAbsentReceiversPromptly) {
  ShmFile f("x.bin", {{"w", {8, 8}}}, 3);
  Broadcaster b;
  BroadcasterConfig cfg = Config();
  cfg.timeout_s = 60;
  cfg.format.family = "dense";
  ASSERT_TRUE(b.Init(cfg).ok());
  ASSERT_TRUE(b.Register(f.regs, "", false).ok());
  const absl::Time t0 = absl::Now();
  std::thread aborter([&] {
    absl::SleepFor(absl::Milliseconds(500));
    EXPECT_TRUE(b.Abort());
  });
  absl::Status s = b.Update(1, [](const UpdateEvent&) {});
  aborter.join();
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
  BroadcasterStatus st = b.GetStatus();
  EXPECT_EQ(st.state, "uninitialized");
  EXPECT_EQ(st.updates_failed, 1u);
  EXPECT_EQ(st.registered_tensors, 1u);  // kept across Abort
  EXPECT_TRUE(b.Init(cfg).ok());
}

TEST_F(BroadcasterTest, RegistrationIsAllOrNothing) {
  ShmFile f("r.bin", {{"a", {4}}, {"b", {4}}}, 4);
  Broadcaster b;
  ASSERT_TRUE(b.Register(f.regs, "", false).ok());
  auto bad = f.regs;
  bad.push_back({TensorSpec{"c", DType::kBF16, {1 << 20}}, ShmLocation{f.path, 0}});
  absl::Status s = b.Register(bad, "", true);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'c'"), std::string::npos);
  EXPECT_EQ(b.RegisteredCount().first, 2u);
  EXPECT_EQ(b.Register({}, "", false, "[1]").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b.Register({}, TmpDir() + "/no-such-dir", false).code(), absl::StatusCode::kNotFound);
}

TEST_F(BroadcasterTest, AFileTheCallerMayNotReadIsRefusedNamingTheTensor) {
  ShmFile f("p.bin", {{"a", {4}}, {"b", {4}}}, 4);
  Broadcaster b;
  ASSERT_TRUE(b.Register(f.regs, "", false).ok());
  std::vector<std::string> asked;
  uint64_t mapped_inode = 0;
  const ReadCheck refuse = [&](const std::string& path, uint64_t, uint64_t inode) {
    asked.push_back(path);
    mapped_inode = inode;
    return absl::PermissionDeniedError(absl::StrCat(path, ": uid 65534 may not read it"));
  };
  absl::Status s = b.Register(f.regs, "", true, "", refuse);
  ASSERT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("tensor 'a'"), std::string::npos) << s;
  EXPECT_NE(s.message().find(f.path), std::string::npos) << s;
  ASSERT_EQ(asked, std::vector<std::string>{f.path});  // once per file
  struct stat st {};
  ASSERT_EQ(stat(f.path.c_str(), &st), 0);
  EXPECT_EQ(mapped_inode, static_cast<uint64_t>(st.st_ino));
  EXPECT_EQ(b.RegisteredCount().first, 2u);  // the registry is as it was
  const ReadCheck allow = [](const std::string&, uint64_t, uint64_t) { return absl::OkStatus(); };
  EXPECT_TRUE(b.Register(f.regs, "", true, "", allow).ok());
}

TEST_F(BroadcasterTest, CudaIpcSourcesAreValidatedAndNeedTheNcclTransport) {
  const TensorSpec spec{"model.layers.0.mlp.gate.weight", DType::kBF16, {4, 8}};
  CudaIpcLocation ipc{.ipc_handle = std::string(64, 'h'), .offset = 64, .device = 0,
                      .allocation_bytes = 128};
  Broadcaster b;
  // A handle that is not a raw cudaIpcMemHandle_t, a range past the end of
  // its allocation: refused by name, nothing registered.
  CudaIpcLocation short_handle = ipc;
  short_handle.ipc_handle = std::string(66, 'h');  // torch's own framing
  absl::Status s = b.Register({{spec, short_handle}}, "", false);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'model.layers.0.mlp.gate.weight'"), std::string::npos) << s;
  EXPECT_NE(s.message().find("66 bytes"), std::string::npos) << s;
  CudaIpcLocation past_end = ipc;
  past_end.offset = 100;
  s = b.Register({{spec, past_end}}, "", false);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("outside its CUDA allocation of 128 bytes"), std::string::npos) << s;
  EXPECT_EQ(b.RegisteredCount().first, 0u);

  ASSERT_TRUE(b.Register({{spec, ipc}}, "", false).ok());
  EXPECT_EQ(b.RegisteredCount(), std::make_pair(1u, uint64_t{64}));
  BroadcasterConfig cfg = Config();
  cfg.format.family = "dense";
  ASSERT_TRUE(b.Init(cfg).ok());
  // GPU memory over gloo: refused before anything is announced.
  s = b.Update(1, [](const UpdateEvent&) {});
  ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("'model.layers.0.mlp.gate.weight' is in GPU memory"),
            std::string::npos)
      << s;
  EXPECT_NE(s.message().find("transport nccl"), std::string::npos) << s;
  EXPECT_EQ(b.GetStatus().state, "idle");

  // The nccl transport is accepted at init; on a machine without a GPU the
  // update says that it needs one (with a GPU, the junk handle fails to open).
  EXPECT_TRUE(b.Abort() == false);
  cfg.transport = "nccl";
  ASSERT_TRUE(b.Init(cfg).ok());
  s = b.Update(1, [](const UpdateEvent&) {});
  ASSERT_FALSE(s.ok());
  absl::StatusOr<int> gpus = CudaDeviceCount();
  ASSERT_TRUE(gpus.ok());
  if (*gpus == 0) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find("needs a usable GPU"), std::string::npos) << s;
  } else {
    EXPECT_NE(s.message().find("model.layers.0.mlp.gate.weight"), std::string::npos) << s;
  }
  cfg.cuda_device = -1;
  Broadcaster other;
  EXPECT_EQ(other.Init(cfg).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace weightcast
