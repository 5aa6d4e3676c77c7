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

}  // namespace
}  // namespace weightcast
