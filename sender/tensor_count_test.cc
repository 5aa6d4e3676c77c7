// One update of a model with DeepSeek-scale tensor counts (issue 15): 100k
// tiny tensors in deepseek_v3 naming, Broadcaster -> gloo -> two in-process
// receivers, one writing a checkpoint directory, one writing host
// parameters in the vLLM FusedMoE layout. Every byte is compared.
//
// No assertion on time (speed lives in bench/tensor_count_bench). What
// makes this a regression test for per-update costs that grow with the
// square of the tensor count: at this size such a step takes minutes, past
// the test's timeout, while the whole test takes seconds when every step is
// linear or n log n.
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/checkpoint.h"
#include "gtest/gtest.h"
#include "protocol/rendezvous_store.h"
#include "receiver/checkpoint_sink.h"
#include "receiver/layout_builder.h"
#include "receiver/parameter_copier.h"
#include "receiver/parameter_sink.h"
#include "receiver/receiver.h"
#include "sender/broadcaster.h"

namespace weightcast {
namespace {

constexpr int kLayers = 131;
constexpr int kExperts = 256;
constexpr int64_t kI = 2, kH = 4;  // each expert projection is 16 bytes

std::string TmpDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

// The model in one shared-memory file: tensor k's bytes are a function of k.
struct Model {
  std::string path;
  std::vector<TensorRegistration> regs;
  std::vector<std::vector<std::byte>> bytes;  // per tensor

  void Add(std::string name, std::vector<int64_t> shape, std::ofstream& out, uint64_t& offset) {
    TensorSpec spec{std::move(name), DType::kBF16, std::move(shape)};
    std::vector<std::byte> b(spec.ByteSize());
    const uint64_t k = regs.size();
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::byte>((k * 131 + i * 7) % 251);
    out.write(reinterpret_cast<const char*>(b.data()), b.size());
    regs.push_back({spec, ShmLocation{path, offset}});
    offset += spec.ByteSize();
    bytes.push_back(std::move(b));
  }
};

Model MakeModel() {
  Model m;
  m.path = TmpDir() + "/model.bin";
  std::ofstream out(m.path, std::ios::binary);
  uint64_t offset = 0;
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    m.Add(p + "input_layernorm.weight", {kH}, out, offset);
    for (int e = 0; e < kExperts; ++e) {
      const std::string x = absl::StrCat(p, "mlp.experts.", e, ".");
      m.Add(x + "gate_proj.weight", {kI, kH}, out, offset);
      m.Add(x + "up_proj.weight", {kI, kH}, out, offset);
      m.Add(x + "down_proj.weight", {kH, kI}, out, offset);
    }
  }
  return m;
}

TEST(TensorCountTest, HundredThousandTensorsArriveWholeInACheckpointAndInVllmParameters) {
  const Model model = MakeModel();
  ASSERT_GT(model.regs.size(), 100000u);
  BroadcasterConfig c;
  c.host = "127.0.0.1";
  c.token = "tok";
  c.num_senders = 1;
  c.inference_world_size = 2;
  c.timeout_s = 600;
  c.bucket_bytes = 4 << 20;
  c.format.family = "deepseek_v3";
  Broadcaster b;
  ASSERT_TRUE(b.Init(c).ok());
  ASSERT_TRUE(b.Register(model.regs, "", false).ok());
  const std::string address = absl::StrCat("127.0.0.1:", b.rendezvous_port());

  // Rank 2's parameters: per layer its norm, w13 [E, 2I, H] and w2 [E, H, I].
  const LayoutBuilder vllm = VllmLayoutBuilder("deepseek_v3", VllmRank{});
  absl::flat_hash_map<std::string, std::vector<std::byte>> params;
  absl::flat_hash_map<std::string, ParameterTarget> targets;
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    params[p + "input_layernorm.weight"].resize(kH * 2);
    params[p + "mlp.experts.w13_weight"].resize(kExperts * 2 * kI * kH * 2);
    params[p + "mlp.experts.w2_weight"].resize(kExperts * kH * kI * 2);
  }
  for (auto& [name, memory] : params) targets[name] = ParameterTarget{memory.data(), memory.size()};

  const std::string out = TmpDir() + "/out";
  std::vector<std::thread> receivers;
  std::vector<absl::Status> received(2);
  for (int j = 0; j < 2; ++j) {
    receivers.emplace_back([&, j] {
      RendezvousKeyValueStore store(address, "tok");
      absl::StatusOr<std::unique_ptr<Receiver>> r =
          Receiver::Create({.rank = 1 + j, .op_timeout = absl::Seconds(600)}, &store,
                           MakeTransportFactory({.rendezvous_address = address, .token = "tok"}));
      if (!r.ok()) {
        received[j] = r.status();
        return;
      }
      CheckpointDirSink checkpoint(out, uint64_t{1} << 30);
      ParameterSink parameters(NewHostParameterCopier(), targets, ParameterSink::Mode::kInPlace,
                               vllm);
      Sink& sink = j == 0 ? static_cast<Sink&>(checkpoint) : parameters;
      absl::StatusOr<std::optional<ReceiveResult>> res =
          (*r)->ReceiveNext(sink, absl::Seconds(600));
      if (!res.ok()) {
        received[j] = res.status();
      } else if (!res->has_value() || !(*res)->committed) {
        received[j] = absl::InternalError(absl::StrCat(
            "rank ", 1 + j, ": not committed: ", res->has_value() ? (*res)->reason : "no update"));
      }
    });
  }
  const absl::Status sent = b.Update(1, [](const UpdateEvent&) {});
  for (auto& t : receivers) t.join();
  ASSERT_TRUE(sent.ok()) << sent;
  ASSERT_TRUE(received[0].ok()) << received[0];
  ASSERT_TRUE(received[1].ok()) << received[1];

  // The checkpoint: every tensor, byte for byte.
  absl::StatusOr<CheckpointDir> dir = CheckpointDir::Open(out + "/step_1");
  ASSERT_TRUE(dir.ok()) << dir.status();
  ASSERT_EQ(dir->tensors().size(), model.regs.size());
  absl::flat_hash_map<std::string, size_t> index;
  for (size_t k = 0; k < model.regs.size(); ++k) index[model.regs[k].spec.name] = k;
  for (const CheckpointTensor& t : dir->tensors()) {
    auto it = index.find(t.spec.name);
    ASSERT_NE(it, index.end()) << t.spec.name;
    const std::vector<std::byte>& want = model.bytes[it->second];
    ASSERT_EQ(t.spec, model.regs[it->second].spec);
    ASSERT_EQ(std::memcmp(t.data, want.data(), want.size()), 0) << t.spec.name;
  }

  // The vLLM parameters: w13[e] = gate_e then up_e, w2[e] = down_e.
  size_t k = 0;
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    std::vector<std::byte> w13, w2;
    const std::vector<std::byte>& norm = model.bytes[k++];
    for (int e = 0; e < kExperts; ++e, k += 3) {
      w13.insert(w13.end(), model.bytes[k].begin(), model.bytes[k].end());
      w13.insert(w13.end(), model.bytes[k + 1].begin(), model.bytes[k + 1].end());
      w2.insert(w2.end(), model.bytes[k + 2].begin(), model.bytes[k + 2].end());
    }
    ASSERT_EQ(params.at(p + "input_layernorm.weight"), norm) << p;
    ASSERT_EQ(params.at(p + "mlp.experts.w13_weight"), w13) << p;
    ASSERT_EQ(params.at(p + "mlp.experts.w2_weight"), w2) << p;
  }
  b.Abort();
}

}  // namespace
}  // namespace weightcast
