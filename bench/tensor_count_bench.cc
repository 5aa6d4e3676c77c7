// Per-update cost as the number of tensors grows (issue 15): every step of an
// update for models of N small tensors (deepseek_v3 naming, per-expert keys,
// 256 experts a layer) against the same steps for a 1,000-tensor model of
// the same total bytes, measured in this run. Printed per step: seconds at
// N, at 1,000, the difference (the per-update overhead the tensor count
// adds) and the ratio. Never a pass/fail on time; the goal (issue 15) is a
// difference under 1 s at 100k tensors on the 2-core development box.
//
// Steps, each timed on its own (best of --reps) with the code the daemon and
// the receivers run:
//   wire tensors   BuildWireTensors (formats/layout BuildOutputs)
//   plan           PlanBuckets
//   encode         MakeSenderManifest + EncodeSenderManifest
//   decode         DecodeSenderManifest (strict)
//   merge          MergeManifests
//   setup <sink>   Sink::Begin of the checkpoint, vLLM-layout, parameter and
//                  callback sinks
//   writes         every segment through a sink (Write, EndBucket per
//                  bucket), for the checkpoint, the vLLM-layout sink and a
//                  parameter sink in the vLLM layout (host parameters)
//   commit         CheckpointDirSink::Commit (shard headers were written at
//                  Begin; here the index, config and renames)
//   update         one whole update, Broadcaster -> gloo loopback -> one
//                  receiver with a checkpoint sink, threads in this process
//
// Usage: tensor_count_bench [--sizes 10000,100000,300000] [--baseline 1000]
//                           [--total-mib 8] [--bucket-mib 32] [--reps 3]
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "bench/timing.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "protocol/bucket_plan.h"
#include "protocol/rendezvous_store.h"
#include "protocol/wire_format.h"
#include "receiver/callback_sink.h"
#include "receiver/checkpoint_sink.h"
#include "receiver/discard_sink.h"
#include "receiver/layout_builder.h"
#include "receiver/parameter_sink.h"
#include "receiver/receiver.h"
#include "receiver/transforming_sink.h"
#include "sender/broadcaster.h"
#include "sender/wire_tensors.h"

namespace weightcast {
namespace {

namespace fs = std::filesystem;

using bench::Best;
using bench::Now;

[[noreturn]] void Die(const std::string& what, const absl::Status& s) {
  std::cerr << what << ": " << s << "\n";
  std::exit(1);
}

template <typename T>
T Check(const std::string& what, absl::StatusOr<T> v) {
  if (!v.ok()) Die(what, v.status());
  return *std::move(v);
}

void Check(const std::string& what, const absl::Status& s) {
  if (!s.ok()) Die(what, s);
}

// `n` bf16 tensors of about `total` bytes in all, named as deepseek_v3's
// checkpoint names them: per layer a norm and an attention projection, then
// up to 256 experts (gate, up, down); the last layer takes what is left.
std::vector<TensorSpec> MakeModel(uint64_t n, uint64_t total) {
  constexpr uint64_t kExperts = 256;
  const int64_t elems = std::max<int64_t>(2, static_cast<int64_t>(total / 2 / n));
  const int64_t I = 2, H = std::max<int64_t>(1, elems / I);
  std::vector<TensorSpec> specs;
  specs.reserve(n);
  for (uint64_t l = 0; specs.size() < n; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    specs.push_back({p + "input_layernorm.weight", DType::kBF16, {I * H}});
    if (specs.size() < n) specs.push_back({p + "self_attn.o_proj.weight", DType::kBF16, {I, H}});
    const uint64_t experts = std::min<uint64_t>(kExperts, (n - specs.size()) / 3);
    for (uint64_t e = 0; e < experts; ++e) {
      const std::string x = absl::StrCat(p, "mlp.experts.", e, ".");
      specs.push_back({x + "gate_proj.weight", DType::kBF16, {I, H}});
      specs.push_back({x + "up_proj.weight", DType::kBF16, {I, H}});
      specs.push_back({x + "down_proj.weight", DType::kBF16, {H, I}});
    }
    if (experts < kExperts) {  // the last layer: fill up with plain tensors
      for (uint64_t k = 0; specs.size() < n; ++k) {
        specs.push_back({absl::StrCat(p, "extra.", k, ".weight"), DType::kBF16, {I, H}});
      }
    }
  }
  return specs;
}

// The model in a shared-memory file, registered as a trainer would.
struct ShmModel {
  std::string dir;
  std::vector<TensorRegistration> regs;
  std::vector<TensorSpec> specs;
  uint64_t bytes = 0;

  ShmModel(std::vector<TensorSpec> s, const std::string& tag) : specs(std::move(s)) {
    dir = absl::StrCat("/dev/shm/weightcast-tcbench-", getpid(), "-", tag);
    fs::create_directories(dir);
    const std::string file = dir + "/model.bin";
    std::ofstream f(file, std::ios::binary);
    std::vector<char> buf;
    for (const TensorSpec& t : specs) {
      buf.assign(t.ByteSize(), static_cast<char>(regs.size() % 251));
      f.write(buf.data(), buf.size());
      regs.push_back({t, ShmLocation{file, bytes}});
      bytes += t.ByteSize();
    }
  }
  ~ShmModel() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

struct Times {
  std::vector<std::pair<std::string, double>> steps;  // in order
  uint64_t wire_bytes = 0;
  uint32_t buckets = 0;
  void Add(const std::string& step, double s) { steps.emplace_back(step, s); }
};

Times Measure(uint64_t n, uint64_t total, uint64_t bucket_bytes, int reps) {
  Times times;
  ShmModel model(MakeModel(n, total), std::to_string(n));
  FormatSpec format;
  format.family = "deepseek_v3";
  const std::string config = R"({"model_type": "deepseek_v3"})";

  WireTensors wire;
  times.Add("wire tensors (BuildOutputs)", Best(reps, [&] {
              wire = Check("wire tensors", BuildWireTensors(format, model.specs, config));
            }));
  BucketPlan plan;
  times.Add("plan buckets", Best(reps, [&] {
              plan = Check("plan", PlanBuckets(wire.outputs, bucket_bytes, 0));
            }));
  for (const Bucket& b : plan.buckets) times.wire_bytes += b.bytes;
  times.buckets = static_cast<uint32_t>(plan.buckets.size());
  std::string encoded;
  times.Add("manifest encode", Best(reps, [&] {
              SenderManifest m = MakeSenderManifest(1, 0, 1, wire.outputs, plan, wire.config_json);
              encoded = EncodeSenderManifest(m);
            }));
  SenderManifest decoded;
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(encoded.data()),
                                         encoded.size());
  times.Add("manifest decode", Best(reps, [&] {
              decoded = Check("decode", DecodeSenderManifest(bytes, 1, 0, 1));
            }));
  GlobalManifest manifest;
  double merge = 1e30;
  for (int r = 0; r < reps; ++r) {
    std::vector<SenderManifest> parts = {decoded};  // a copy, not timed
    const double t0 = Now();
    manifest = Check("merge", MergeManifests(std::move(parts)));
    merge = std::min(merge, Now() - t0);
  }
  times.Add("merge manifests", merge);

  // Receiver setup of each sink kind.
  const std::string out = model.dir + "/ckpt";
  {
    // Begin lays out the shards (headers included); writes and commit follow.
    double setup = 1e30, writes = 1e30, commit = 1e30;
    for (int r = 0; r < reps; ++r) {
      const std::string root = absl::StrCat(out, "-", r);
      CheckpointDirSink sink(root, uint64_t{5} << 30);
      double t0 = Now();
      Check("checkpoint begin", sink.Begin(manifest));
      setup = std::min(setup, Now() - t0);
      std::vector<std::byte> zeros(bucket_bytes);
      t0 = Now();
      for (const auto& segments : manifest.bucket_segments) {
        for (const auto& [t, seg] : segments) {
          Check("checkpoint write", sink.Write(t, seg.tensor_offset, zeros.data(), seg.bytes));
        }
      }
      writes = std::min(writes, Now() - t0);
      t0 = Now();
      Check("checkpoint commit", sink.Commit().status());
      commit = std::min(commit, Now() - t0);
      std::error_code ec;
      fs::remove_all(root, ec);
    }
    times.Add("setup: checkpoint sink", setup);
    times.Add("writes: checkpoint sink", writes);
    times.Add("commit: checkpoint sink (index)", commit);
  }
  // Every segment of the version through `sink` as the receiver hands them
  // over (bucket by bucket), then its Commit.
  std::vector<std::byte> payload(bucket_bytes, std::byte{1});
  auto feed = [&](Sink& sink) {
    for (const auto& segments : manifest.bucket_segments) {
      for (const auto& [t, seg] : segments) {
        Check("write", sink.Write(t, seg.tensor_offset, payload.data(), seg.bytes));
      }
      Check("end bucket", sink.EndBucket());
    }
    Check("commit", sink.Commit().status());
  };
  const LayoutBuilder vllm = VllmLayoutBuilder("deepseek_v3", VllmRank{});
  {
    DiscardSink inner;
    TransformingSink sink(&inner, vllm);
    times.Add("setup: vLLM layout sink", Best(reps, [&] {
                Check("vllm begin", sink.Begin(manifest));
                sink.Abort();
              }));
    times.Add("writes+commit: vLLM layout sink", Best(reps, [&] {
                Check("vllm begin", sink.Begin(manifest));
                feed(sink);
              }));
  }
  // Host parameters, as a CPU engine has them: one per output of `layout`.
  auto parameters = [&](const LayoutBuilder& layout, std::vector<std::byte>& memory) {
    std::vector<OutputTensor> outs =
        Check("layout", layout ? layout(manifest) : IdentityLayout(manifest));
    uint64_t need = 0;
    for (const OutputTensor& o : outs) need += o.spec.ByteSize();
    memory.assign(need, std::byte{0});
    absl::flat_hash_map<std::string, ParameterTarget> targets;
    uint64_t at = 0;
    for (const OutputTensor& o : outs) {
      targets[o.spec.name] = ParameterTarget{memory.data() + at, o.spec.ByteSize()};
      at += o.spec.ByteSize();
    }
    return targets;
  };
  {
    std::vector<std::byte> memory;
    ParameterSink sink(NewHostParameterCopier(), parameters({}, memory),
                       ParameterSink::Mode::kInPlace);
    times.Add("setup: parameter sink", Best(reps, [&] {
                Check("parameter begin", sink.Begin(manifest));
                sink.Abort();
              }));
  }
  {
    std::vector<std::byte> memory;
    ParameterSink sink(NewHostParameterCopier(), parameters(vllm, memory),
                       ParameterSink::Mode::kInPlace, vllm);
    times.Add("setup+writes+commit: parameter sink, vLLM layout", Best(reps, [&] {
                Check("parameter begin", sink.Begin(manifest));
                feed(sink);
              }));
  }
  {
    TensorCallbacks cb;
    cb.tensor = [](const ReceivedTensor&) { return absl::OkStatus(); };
    CallbackSink sink(cb);
    times.Add("setup: callback sink", Best(reps, [&] {
                Check("callback begin", sink.Begin(manifest));
                sink.Abort();
              }));
  }

  // A whole update: Broadcaster -> gloo loopback -> Receiver -> checkpoint.
  Broadcaster b;
  BroadcasterConfig cfg;
  cfg.token = "tok";
  cfg.num_senders = 1;
  cfg.inference_world_size = 1;
  cfg.bucket_bytes = bucket_bytes;
  cfg.timeout_s = 600;
  cfg.format.family = "deepseek_v3";
  Check("init", b.Init(cfg).status());
  times.Add("register (once, not per update)", Best(1, [&] {
              Check("register", b.Register(model.regs, "", false, config));
            }));
  const std::string address = absl::StrCat("127.0.0.1:", b.rendezvous_port());
  RendezvousKeyValueStore store(address, "tok");
  auto receiver = Check("receiver", Receiver::Create({.rank = 1, .op_timeout = absl::Seconds(600)},
                                                     &store,
                                                     MakeTransportFactory({.rendezvous_address = address, .token = "tok"})));
  uint64_t version = 0;
  auto one_update = [&] {
    ++version;
    absl::Status received;
    std::thread t([&] {
      CheckpointDirSink sink(out, uint64_t{5} << 30);
      absl::StatusOr<std::optional<ReceiveResult>> r = receiver->ReceiveNext(sink, absl::Seconds(600));
      if (!r.ok()) {
        received = r.status();
      } else if (!r->has_value() || !(*r)->committed) {
        received = absl::InternalError("update not committed");
      }
    });
    Check("update", b.Update(version, [](const UpdateEvent&) {}));
    t.join();
    Check("receive", received);
    std::error_code ec;
    fs::remove_all(absl::StrCat(out, "/step_", version), ec);
  };
  one_update();  // forms the group
  times.Add("update end to end (checkpoint sink)", Best(reps, one_update));
  b.Abort();
  return times;
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) {
  using namespace weightcast;
  std::vector<uint64_t> sizes = {10000, 100000, 300000};
  uint64_t baseline = 1000, total_mib = 8, bucket_mib = 32;
  int reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    bool ok = true;
    if (a == "--sizes") {
      sizes.clear();
      for (absl::string_view s : absl::StrSplit(v, ',', absl::SkipEmpty())) {
        uint64_t n = 0;
        ok = ok && absl::SimpleAtoi(s, &n) && n > 0;
        sizes.push_back(n);
      }
    } else if (a == "--baseline") {
      ok = absl::SimpleAtoi(v, &baseline) && baseline > 0;
    } else if (a == "--total-mib") {
      ok = absl::SimpleAtoi(v, &total_mib) && total_mib > 0;
    } else if (a == "--bucket-mib") {
      ok = absl::SimpleAtoi(v, &bucket_mib) && bucket_mib > 0;
    } else if (a == "--reps") {
      ok = absl::SimpleAtoi(v, &reps) && reps > 0;
    } else {
      ok = false;
    }
    if (!ok) {
      std::cerr << "bad flag " << a << " " << v << "\n";
      return 2;
    }
  }
  const uint64_t total = total_mib << 20, bucket = bucket_mib << 20;
  const Times base = Measure(baseline, total, bucket, reps);
  for (uint64_t n : sizes) {
    const Times t = Measure(n, total, bucket, reps);
    std::cout << absl::StrFormat(
        "\n%d tensors vs %d tensors, %d MiB bf16 each (wire: %.1f MiB in %d buckets vs %.1f MiB "
        "in %d; segments are 256-byte aligned), %d MiB buckets, 1 sender -> 1 receiver, gloo "
        "loopback, best of %d\n"
        "| step | %d tensors | %d tensors | difference | ratio |\n|---|---|---|---|---|\n",
        n, baseline, total_mib, t.wire_bytes / 1048576.0, t.buckets, base.wire_bytes / 1048576.0,
        base.buckets, bucket_mib, reps, n, baseline);
    for (size_t i = 0; i < t.steps.size(); ++i) {
      const double a = t.steps[i].second, b = base.steps[i].second;
      std::cout << absl::StrFormat("| %s | %.4f s | %.4f s | %+.4f s | %.1f x |\n",
                                   t.steps[i].first, a, b, a - b, b > 0 ? a / b : 0.0);
    }
  }
  return 0;
}
