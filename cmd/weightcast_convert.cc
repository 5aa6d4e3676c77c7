// weightcast-convert: runs a checkpoint directory through the same layout
// rules, FP8 quantizer and checkpoint writer an update uses, without a
// network: for converting offline, and for validating the formats against
// transformers (tests/golden/validate.py).
//
//   weightcast-convert --in STATE_DICT_DIR --out ROOT --weight-version 1
//       --source-layout fused [--quantization fp8-block]   (one command line)
// writes ROOT/step_1. Exit codes: 0 ok, 1 conversion failed, 2 bad usage.
#include <cstdio>
#include <fstream>

#include <CLI/CLI.hpp>

#include "common/checkpoint.h"
#include "cmd/cli.h"
#include "kernels/pack_reference.h"
#include "formats/layout.h"
#include "formats/vllm_layout.h"
#include "sender/wire_tensors.h"

int main(int argc, char** argv) {
  CLI::App app{"weightcast-convert: convert a checkpoint with weightcast's format rules"};
  weightcast::AddStandardFlags(app, "weightcast-convert");
  std::string in, out, config_path;
  uint64_t version = 1, shard_bytes = uint64_t{4} << 30;
  weightcast::FormatOptionsText f;
  app.add_option("--in", in, "safetensors checkpoint directory")->required();
  app.add_option("--out", out, "output root (ROOT/step_<version>)")->required();
  app.add_option("--weight-version", version, "the version written (ROOT/step_<version>)")
      ->capture_default_str();
  app.add_option("--model-config", config_path, "config.json to use (default: the one in --in)");
  app.add_option("--family", f.family, "model family (default: config.json model_type)");
  app.add_option("--source-layout", f.source_layout, "per-expert | fused | stacked");
  app.add_option("--target", f.target, "hf | hf-fused");
  app.add_option("--quantization", f.quant_method, "none | fp8-block");
  app.add_option("--scale-rule", f.scale_rule, "amax-clamp | scale-clamp");
  app.add_flag("--pow2-scales", f.power_of_two_scales, "power-of-two (UE8M0) FP8 scales");
  app.add_option("--shard-bytes", shard_bytes, "largest safetensors shard")->capture_default_str();
  std::vector<int> vllm_rank;
  app.add_option("--vllm-rank", vllm_rank,
                 "write the vLLM FusedMoE layout of TP_RANK TP_SIZE EP_RANK EP_SIZE instead")
      ->expected(4);
  if (std::optional<int> rc = weightcast::ParseCommandLine(app, argc, argv)) return *rc;

  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "weightcast-convert: %s\n", s.ToString().c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  };
  auto spec = weightcast::ParseFormatOptions(f);
  if (!spec.ok()) return fail(spec.status());
  auto dir = weightcast::CheckpointDir::Open(in);
  if (!dir.ok()) return fail(dir.status());
  std::vector<weightcast::HostSource> sources = dir->sources();
  std::vector<weightcast::TensorSpec> specs;
  for (const auto& src : sources) specs.push_back(src.spec);
  std::string config = dir->config_json();
  if (!config_path.empty()) {
    std::ifstream cfg(config_path);
    if (!cfg) return fail(absl::InvalidArgumentError("--config: cannot read " + config_path));
    config.assign(std::istreambuf_iterator<char>(cfg), {});
  }
  auto wire = weightcast::BuildWireTensors(*spec, specs, config);
  if (!wire.ok()) return fail(wire.status());
  std::vector<weightcast::OutputTensor> outputs = std::move(wire->outputs);
  // The receiver-side vLLM layout reads the wire tensors: materialize them.
  std::vector<std::vector<std::byte>> wire_bytes;
  if (!vllm_rank.empty()) {
    std::vector<weightcast::TensorSpec> wire_specs;
    std::vector<weightcast::HostSource> wire_sources;
    for (const auto& o : outputs) {
      wire_bytes.emplace_back(o.spec.ByteSize());
      if (auto s = weightcast::PackOutputRange(o, sources, 0, wire_bytes.back().size(),
                                               wire_bytes.back().data());
          !s.ok()) {
        return fail(s);
      }
      wire_specs.push_back(o.spec);
      wire_sources.push_back({o.spec, wire_bytes.back().data()});
    }
    weightcast::FormatSpec fs = *spec;
    auto family = weightcast::ResolveFamily(fs, config, specs);
    if (!family.ok()) return fail(family.status());
    auto v = weightcast::BuildVllmOutputs(
        **family, wire_specs, {vllm_rank[0], vllm_rank[1], vllm_rank[2], vllm_rank[3]});
    if (!v.ok()) return fail(v.status());
    outputs = *std::move(v);
    sources = std::move(wire_sources);
  }
  std::vector<weightcast::TensorSpec> out_specs;
  for (const auto& o : outputs) out_specs.push_back(o.spec);
  auto writer = weightcast::CheckpointWriter::Begin(out, version, out_specs, wire->config_json,
                                                    shard_bytes);
  if (!writer.ok()) return fail(writer.status());
  std::vector<std::byte> buffer;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& o = outputs[i];
    buffer.resize(o.spec.ByteSize());
    if (auto s = weightcast::PackOutputRange(o, sources, 0, buffer.size(), buffer.data()); !s.ok()) {
      return fail(s);
    }
    if (auto s = (*writer)->Write(i, 0, buffer.data(), buffer.size()); !s.ok()) return fail(s);
  }
  auto path = (*writer)->Commit();
  if (!path.ok()) return fail(path.status());
  std::printf("%s: %zu tensors\n", path->c_str(), outputs.size());
  return 0;
}
