// The oracle is transformers: for every family saved under
// tests/golden/models (by tests/golden/make_golden.py with transformers
// itself), weightcast turns model.state_dict() (transformers 5's in-memory
// layout) into the tensors save_pretrained wrote: the same keys, every byte
// equal. With block FP8, every quantized weight dequantizes within the bound
// of docs/FORMATS.md and its scales have the checkpoint's names and shapes.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/checkpoint.h"
#include "formats/layout.h"
#include "formats/vllm_layout.h"
#include "gtest/gtest.h"
#include "kernels/fp8_reference.h"
#include "kernels/pack_reference.h"

namespace weightcast {
namespace {

namespace fs = std::filesystem;

const char kModels[] = "tests/golden/models";

std::vector<std::string> Cases() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(kModels)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

struct Loaded {
  CheckpointDir dir;
  std::vector<TensorSpec> specs;
  std::vector<HostSource> sources;
};

Loaded Load(const std::string& dir) {
  auto d = CheckpointDir::Open(dir);
  EXPECT_TRUE(d.ok()) << d.status();
  Loaded l{*d, {}, {}};
  l.sources = l.dir.sources();
  for (const HostSource& s : l.sources) l.specs.push_back(s.spec);
  return l;
}

std::map<std::string, std::vector<std::byte>> PackAll(const std::vector<OutputTensor>& outs,
                                                      const Loaded& l) {
  std::map<std::string, std::vector<std::byte>> r;
  for (const OutputTensor& o : outs) {
    std::vector<std::byte> b(o.spec.ByteSize());
    EXPECT_TRUE(PackOutputRange(o, l.sources, 0, b.size(), b.data()).ok()) << o.spec.name;
    r[o.spec.name] = std::move(b);
  }
  return r;
}

TEST(GoldenTest, EveryFamilyMatchesSavePretrainedByteForByte) {
  const auto cases = Cases();
  ASSERT_GE(cases.size(), 7u) << "golden models missing";
  for (const std::string& c : cases) {
    SCOPED_TRACE(c);
    const std::string d = std::string(kModels) + "/" + c;
    Loaded state = Load(d + "/state_dict");
    Loaded expected = Load(d + "/expected");
    FormatSpec spec;
    spec.source = SourceLayout::kFused;  // transformers 5's state_dict()
    spec.target = TargetFormat::kHf;
    auto family = ResolveFamily(spec, ReadFile(d + "/config.json"), state.specs);
    ASSERT_TRUE(family.ok()) << family.status();
    auto outs = BuildOutputs(spec, **family, state.specs);
    ASSERT_TRUE(outs.ok()) << outs.status();
    auto got = PackAll(*outs, state);
    std::map<std::string, const HostSource*> want;
    for (const HostSource& s : expected.sources) want[s.spec.name] = &s;
    ASSERT_EQ(got.size(), want.size());
    for (const OutputTensor& o : *outs) {
      ASSERT_TRUE(want.count(o.spec.name)) << o.spec.name << " is not what save_pretrained wrote";
      const HostSource& w = *want[o.spec.name];
      EXPECT_EQ(o.spec, w.spec);
      EXPECT_EQ(std::memcmp(got[o.spec.name].data(), w.data, w.spec.ByteSize()), 0)
          << o.spec.name;
    }
  }
}

TEST(GoldenTest, Fp8OfEveryFamilyDequantizesWithinTheBound) {
  for (const std::string& c : Cases()) {
    SCOPED_TRACE(c);
    const std::string d = std::string(kModels) + "/" + c;
    Loaded state = Load(d + "/state_dict");
    FormatSpec spec;
    spec.source = SourceLayout::kFused;
    spec.quant = QuantMethod::kFp8Block;
    auto family = ResolveFamily(spec, ReadFile(d + "/config.json"), state.specs);
    ASSERT_TRUE(family.ok());
    auto plain_spec = spec;
    plain_spec.quant = QuantMethod::kNone;
    auto plain = BuildOutputs(plain_spec, **family, state.specs);
    auto outs = BuildOutputs(spec, **family, state.specs);
    ASSERT_TRUE(outs.ok() && plain.ok());
    auto reference = PackAll(*plain, state);
    auto got = PackAll(*outs, state);
    int quantized = 0;
    for (const OutputTensor& o : *outs) {
      if (o.quant != QuantKind::kFp8Weight) continue;
      ++quantized;
      const std::string scale_name = o.spec.name + "_scale_inv";
      ASSERT_TRUE(got.count(scale_name)) << scale_name;
      const auto& q = got[o.spec.name];
      const float* scales = reinterpret_cast<const float*>(got[scale_name].data());
      const auto& ref = reference[o.spec.name];
      const uint64_t R = o.q_rows, C = o.q_cols, cb = (C + 127) / 128, rb = (R + 127) / 128;
      for (uint64_t b = 0; b < o.q_batch; ++b) {
        for (uint64_t r = 0; r < R; ++r) {
          for (uint64_t col = 0; col < C; ++col) {
            const uint64_t i = (b * R + r) * C + col;
            const float w = LoadAsFloat(o.source_dtype, ref.data(), i);
            const float s = scales[(b * rb + r / 128) * cb + col / 128];
            const float deq = DecodeE4M3(static_cast<uint8_t>(q[i])) * s;
            ASSERT_LE(std::fabs(deq - w), std::max(0x1p-4f * std::fabs(w), 0x1p-10f * s))
                << o.spec.name << " [" << b << "," << r << "," << col << "]";
          }
        }
      }
    }
    if ((*family)->moe || c == "llama") EXPECT_GT(quantized, 0);
    for (const OutputTensor& o : *outs) {
      const std::string& n = o.spec.name;
      if (n.find("embed_tokens") != std::string::npos || n.find("lm_head") != std::string::npos ||
          n.find("norm") != std::string::npos || o.spec.shape.size() < 2) {
        EXPECT_NE(o.spec.dtype, DType::kF8E4M3) << n << " must not be quantized";
      }
    }
  }
}

// vLLM's FusedMoE tensors, from either wire layout, for several TP and EP
// ranks, equal the rule of FORMATS.md §1 applied by plain indexing to
// transformers' own fused tensors: w13 = this rank's gate rows then up rows
// (gpt_oss: its interleaved gate/up rows as they are), w2 = this rank's
// down columns, gpt_oss's biases sliced the same way.
TEST(GoldenTest, VllmLayoutOfEveryFamilyFollowsTheRule) {
  int checked = 0;
  for (const std::string& c : Cases()) {
    SCOPED_TRACE(c);
    const std::string d = std::string(kModels) + "/" + c;
    Loaded state = Load(d + "/state_dict");
    FormatSpec spec;
    spec.source = SourceLayout::kFused;
    auto family = ResolveFamily(spec, ReadFile(d + "/config.json"), state.specs);
    ASSERT_TRUE(family.ok());
    const FamilyRules& f = **family;
    if (!f.moe) continue;
    // transformers' fused tensors of every block, by checkpoint prefix.
    std::map<std::string, std::pair<const HostSource*, const HostSource*>> fused;
    std::map<std::string, std::pair<const HostSource*, const HostSource*>> biases;
    for (const HostSource& s : state.sources) {
      const std::string& n = s.spec.name;
      const std::string block = f.fused_block.empty() ? f.block : f.fused_block;
      const size_t at = n.find("." + block + ".experts.");
      if (at == std::string::npos) continue;
      const std::string prefix = n.substr(0, at) + "." + f.block + ".experts";
      const std::string rest = n.substr(at + block.size() + 10);
      if (rest == "gate_up_proj") fused[prefix].first = &s;
      if (rest == "down_proj") fused[prefix].second = &s;
      if (rest == "gate_up_proj_bias") biases[prefix].first = &s;
      if (rest == "down_proj_bias") biases[prefix].second = &s;
    }
    ASSERT_FALSE(fused.empty());
    for (TargetFormat wire : {TargetFormat::kHf, TargetFormat::kHfFused}) {
      FormatSpec ws = spec;
      ws.target = wire;
      auto wire_outs = BuildOutputs(ws, f, state.specs);
      ASSERT_TRUE(wire_outs.ok()) << wire_outs.status();
      // The wire as a receiver holds it.
      auto packed = PackAll(*wire_outs, state);
      std::vector<TensorSpec> rx;
      std::vector<HostSource> rx_sources;
      for (const OutputTensor& o : *wire_outs) rx.push_back(o.spec);
      for (const TensorSpec& t : rx) rx_sources.push_back({t, packed[t.name].data()});
      for (auto [tp_rank, tp] : {std::pair{0, 1}, {1, 2}}) {
        for (auto [ep_rank, ep] : {std::pair{0, 1}, {1, 2}}) {
          SCOPED_TRACE(testing::Message() << "wire " << int(wire) << " tp " << tp_rank << "/"
                                          << tp << " ep " << ep_rank << "/" << ep);
          auto vl = BuildVllmOutputs(f, rx, {tp_rank, tp, ep_rank, ep});
          ASSERT_TRUE(vl.ok()) << vl.status();
          std::map<std::string, std::vector<std::byte>> got;
          for (const OutputTensor& o : *vl) {
            std::vector<std::byte> b(o.spec.ByteSize());
            ASSERT_TRUE(PackOutputRange(o, rx_sources, 0, b.size(), b.data()).ok());
            got[o.spec.name] = std::move(b);
            EXPECT_EQ(o.spec.name.find("gate_up_proj"), std::string::npos) << o.spec.name;
          }
          for (const auto& [prefix, gd] : fused) {
            const HostSource& gu = *gd.first;
            const HostSource& dn = *gd.second;
            const auto& gs = gu.spec.shape;
            const int64_t E = gs[0];
            const int64_t I = (f.fused_transposed ? gs[2] : gs[1]) / 2;
            const int64_t H = f.fused_transposed ? gs[1] : gs[2];
            const int64_t Itp = I / tp, r0 = tp_rank * Itp;
            auto [first, count] = LocalExperts(E, ep_rank, ep);
            const auto& w13 = got[prefix + ".w13_weight"];
            const auto& w2 = got[prefix + ".w2_weight"];
            ASSERT_EQ(w13.size(), size_t(count * 2 * Itp * H * 2)) << prefix;
            ASSERT_EQ(w2.size(), size_t(count * H * Itp * 2)) << prefix;
            auto bf16 = [](const std::byte* base, int64_t i) {
              uint16_t v;
              std::memcpy(&v, base + 2 * i, 2);
              return v;
            };
            for (int64_t el = 0; el < count; ++el) {
              const int64_t e = first + el;
              for (int64_t j = 0; j < 2 * Itp; ++j) {
                // Which of the expert's 2I gate/up positions row j is.
                const int64_t r = f.gate_up_interleaved ? 2 * r0 + j
                                  : j < Itp             ? r0 + j
                                                        : I + r0 + (j - Itp);
                for (int64_t h = 0; h < H; ++h) {
                  const int64_t src = f.fused_transposed ? (e * H + h) * 2 * I + r
                                                         : (e * 2 * I + r) * H + h;
                  ASSERT_EQ(bf16(w13.data(), (el * 2 * Itp + j) * H + h), bf16(gu.data, src))
                      << prefix << " w13 [" << el << "," << j << "," << h << "]";
                }
              }
              for (int64_t h = 0; h < H; ++h) {
                for (int64_t j = 0; j < Itp; ++j) {
                  const int64_t src = f.fused_transposed ? (e * I + r0 + j) * H + h
                                                         : (e * H + h) * I + r0 + j;
                  ASSERT_EQ(bf16(w2.data(), (el * H + h) * Itp + j), bf16(dn.data, src))
                      << prefix << " w2 [" << el << "," << h << "," << j << "]";
                }
              }
              if (!f.expert_biases) continue;
              const auto& b13 = got[prefix + ".w13_bias"];
              for (int64_t j = 0; j < 2 * Itp; ++j) {
                ASSERT_EQ(bf16(b13.data(), el * 2 * Itp + j),
                          bf16(biases[prefix].first->data, e * 2 * I + 2 * r0 + j));
              }
              ASSERT_EQ(got.count(prefix + ".w2_bias"), tp_rank == 0 ? 1u : 0u);
              if (tp_rank != 0) continue;
              for (int64_t h = 0; h < H; ++h) {
                ASSERT_EQ(bf16(got[prefix + ".w2_bias"].data(), el * H + h),
                          bf16(biases[prefix].second->data, e * H + h));
              }
            }
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_GE(checked, 16 * 14);
}

}  // namespace
}  // namespace weightcast
