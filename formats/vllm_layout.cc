#include "formats/vllm_layout.h"

#include <map>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "formats/matrix_view.h"

namespace weightcast {
namespace {

enum Slot { kGateUp, kDown, kGateUpScale, kDownScale, kGateUpBias, kDownBias, kSlots };

// One routed-expert block on the wire, per-expert ("<P>.<e>.<proj>.weight"
// and "..._scale_inv") or fused ("<P>.gate_up_proj", "<P>.down_proj", their
// "_scale_inv" and, for gpt_oss, "_bias").
struct Block {
  size_t first_index = 0;
  std::string prefix;  // "<layer>.<block>.experts", the checkpoint's block name
  std::map<int64_t, std::array<std::optional<uint32_t>, 3>> w, s;  // per-expert
  std::array<std::optional<uint32_t>, kSlots> fused;
};

// Every expert's matrices, whatever layout they came in: gate and up [I, H]
// (gpt_oss: gate[e] is the interleaved [2I, H] and up is empty), down
// [H, I], their block scales, and gpt_oss's biases as [1, 2I] and [1, H].
struct Experts {
  int64_t E = 0, I = 0, H = 0;
  DType dtype = DType::kBF16;
  std::vector<MatrixView> gate, up, down, gate_s, up_s, down_s, gate_up_bias, down_bias;
};

absl::Status Bad(const std::string& t, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("tensor '", t, "': ", why));
}

int64_t Blocks(int64_t n) { return (n + kFp8Block - 1) / kFp8Block; }

std::string Dims(const std::vector<int64_t>& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) absl::StrAppend(&out, i ? "x" : "", s[i]);
  return out;
}

absl::Status Expect(const TensorSpec& t, const std::vector<int64_t>& shape, DType dtype) {
  if (t.shape != shape) {
    return Bad(t.name, absl::StrCat("should be [", Dims(shape), "], is [", Dims(t.shape), "]"));
  }
  if (t.dtype != dtype) return Bad(t.name, "dtype differs from the block's gate_up/gate weight");
  return absl::OkStatus();
}

// Where `canonical` (in-memory naming) belongs: its block's prefix and, for
// fused tensors, its slot; for per-expert ones the expert, role and whether
// it is a scale. nullopt: not a routed-expert tensor.
struct Parsed {
  std::string prefix;
  std::optional<Slot> slot;
  int64_t expert = 0;
  int role = 0;
  bool scale = false;
};

std::optional<Parsed> Parse(const FamilyRules& f, const std::string& canonical) {
  if (!f.moe) return std::nullopt;
  std::vector<std::string> blocks = {f.block};
  if (!f.fused_block.empty()) blocks.push_back(f.fused_block);
  for (size_t bi = 0; bi < blocks.size(); ++bi) {
    const std::string anchor = absl::StrCat(blocks[bi], ".experts.");
    const size_t at = canonical.rfind(anchor);
    if (at == std::string::npos || (at > 0 && canonical[at - 1] != '.')) continue;
    Parsed p;
    p.prefix = absl::StrCat(canonical.substr(0, at), f.block, ".experts");
    const std::string rest = canonical.substr(at + anchor.size());
    static const std::pair<const char*, Slot> kFused[] = {
        {"gate_up_proj", kGateUp},          {"down_proj", kDown},
        {"gate_up_proj_scale_inv", kGateUpScale}, {"down_proj_scale_inv", kDownScale},
        {"gate_up_proj_bias", kGateUpBias}, {"down_proj_bias", kDownBias}};
    for (const auto& [name, slot] : kFused) {
      if (rest == name) {
        p.slot = slot;
        return p;
      }
    }
    if (bi != 0) continue;  // per-expert keys use the checkpoint's block name
    const size_t dot = rest.find('.');
    if (dot == std::string::npos || !absl::SimpleAtoi(rest.substr(0, dot), &p.expert)) continue;
    const std::string proj = rest.substr(dot + 1);
    for (int r = 0; r < 3; ++r) {
      const std::string& name = r == 0 ? f.gate : r == 1 ? f.up : f.down;
      if (proj == name + ".weight") return p.role = r, p;
      if (proj == name + ".weight_scale_inv") return p.role = r, p.scale = true, p;
    }
  }
  return std::nullopt;
}

absl::StatusOr<Experts> PerExpert(const FamilyRules& f, const Block& b,
                                  std::span<const TensorSpec> rx) {
  Experts x;
  x.E = b.w.rbegin()->first + 1;
  auto name = [&](int64_t e, int r) {
    const std::string& p = r == 0 ? f.gate : r == 1 ? f.up : f.down;
    return absl::StrCat(b.prefix, ".", e, ".", p, ".weight");
  };
  for (int64_t e = 0; e < x.E; ++e) {
    for (int r = 0; r < 3; ++r) {
      if (!b.w.count(e) || !b.w.at(e)[r]) return Bad(name(e, r), "missing");
    }
  }
  const TensorSpec& g0 = rx[*b.w.at(0)[0]];
  if (g0.shape.size() != 2) return Bad(g0.name, "expert weights must be 2-D");
  x.I = g0.shape[0];
  x.H = g0.shape[1];
  x.dtype = g0.dtype;
  const uint64_t I = x.I, H = x.H, ib = Blocks(x.I), hb = Blocks(x.H);
  const bool fp8 = x.dtype == DType::kF8E4M3;
  for (int64_t e = 0; e < x.E; ++e) {
    const auto& w = b.w.at(e);
    for (int r = 0; r < 3; ++r) {
      const std::vector<int64_t> want =
          r == 2 ? std::vector<int64_t>{x.H, x.I} : std::vector<int64_t>{x.I, x.H};
      if (absl::Status st = Expect(rx[*w[r]], want, x.dtype); !st.ok()) return st;
    }
    x.gate.push_back(MatrixView{*w[0], 0, I, H, H});
    x.up.push_back(MatrixView{*w[1], 0, I, H, H});
    x.down.push_back(MatrixView{*w[2], 0, H, I, I});
    if (!fp8) continue;
    if (!b.s.count(e) || !b.s.at(e)[0] || !b.s.at(e)[1] || !b.s.at(e)[2]) {
      return Bad(rx[*w[0]].name, "FP8 expert without its weight_scale_inv tensors");
    }
    const auto& s = b.s.at(e);
    x.gate_s.push_back(MatrixView{*s[0], 0, ib, hb, hb});
    x.up_s.push_back(MatrixView{*s[1], 0, ib, hb, hb});
    x.down_s.push_back(MatrixView{*s[2], 0, hb, ib, ib});
  }
  return x;
}

absl::StatusOr<Experts> Fused(const FamilyRules& f, const Block& b,
                              std::span<const TensorSpec> rx) {
  const auto& slot = b.fused;
  if (!slot[kGateUp]) return Bad(b.prefix + ".gate_up_proj", "missing");
  if (!slot[kDown]) return Bad(b.prefix + ".down_proj", "missing");
  const TensorSpec& gu = rx[*slot[kGateUp]];
  const TensorSpec& dn = rx[*slot[kDown]];
  if (gu.shape.size() != 3) return Bad(gu.name, "fused gate_up_proj must be 3-D");
  Experts x;
  x.E = gu.shape[0];
  x.dtype = gu.dtype;
  const int64_t two_i = f.fused_transposed ? gu.shape[2] : gu.shape[1];
  if (two_i % 2) return Bad(gu.name, "its 2*I axis is odd");
  x.I = two_i / 2;
  x.H = f.fused_transposed ? gu.shape[1] : gu.shape[2];
  const uint64_t E = x.E, I = x.I, H = x.H;
  if (absl::Status st = Expect(dn, f.fused_transposed ? std::vector<int64_t>{x.E, x.I, x.H}
                                                      : std::vector<int64_t>{x.E, x.H, x.I},
                               x.dtype);
      !st.ok()) {
    return st;
  }
  const bool fp8 = x.dtype == DType::kF8E4M3;
  if (fp8 && f.fused_transposed) {
    return Bad(gu.name, "FP8 of a transposed fused layout is not produced by any sender");
  }
  if (fp8 && (!slot[kGateUpScale] || !slot[kDownScale])) {
    return Bad(gu.name, "FP8 fused experts without their _scale_inv tensors");
  }
  const uint64_t ib = Blocks(x.I), hb = Blocks(x.H);
  if (fp8) {
    if (absl::Status st = Expect(rx[*slot[kGateUpScale]], {x.E, 2 * Blocks(x.I), Blocks(x.H)},
                                 DType::kF32);
        !st.ok()) {
      return st;
    }
    if (absl::Status st = Expect(rx[*slot[kDownScale]], {x.E, Blocks(x.H), Blocks(x.I)},
                                 DType::kF32);
        !st.ok()) {
      return st;
    }
  }
  if (f.expert_biases) {
    if (!slot[kGateUpBias]) return Bad(b.prefix + ".gate_up_proj_bias", "missing");
    if (!slot[kDownBias]) return Bad(b.prefix + ".down_proj_bias", "missing");
    if (absl::Status st = Expect(rx[*slot[kGateUpBias]], {x.E, 2 * x.I}, x.dtype); !st.ok()) {
      return st;
    }
    if (absl::Status st = Expect(rx[*slot[kDownBias]], {x.E, x.H}, x.dtype); !st.ok()) return st;
  }
  for (uint64_t e = 0; e < E; ++e) {
    if (f.fused_transposed) {  // gate_up [E, H, 2I], down [E, I, H]
      const uint64_t at = e * H * 2 * I;
      if (f.gate_up_interleaved) {
        x.gate.push_back(MatrixView{*slot[kGateUp], at, 2 * I, H, 2 * I, true});
      } else {
        x.gate.push_back(MatrixView{*slot[kGateUp], at, I, H, 2 * I, true});
        x.up.push_back(MatrixView{*slot[kGateUp], at + I, I, H, 2 * I, true});
      }
      x.down.push_back(MatrixView{*slot[kDown], e * I * H, H, I, H, true});
    } else {  // gate_up [E, 2I, H], down [E, H, I]
      x.gate.push_back(MatrixView{*slot[kGateUp], e * 2 * I * H, I, H, H});
      x.up.push_back(MatrixView{*slot[kGateUp], e * 2 * I * H + I * H, I, H, H});
      x.down.push_back(MatrixView{*slot[kDown], e * H * I, H, I, I});
    }
    if (fp8) {
      x.gate_s.push_back(MatrixView{*slot[kGateUpScale], e * 2 * ib * hb, ib, hb, hb});
      x.up_s.push_back(MatrixView{*slot[kGateUpScale], e * 2 * ib * hb + ib * hb, ib, hb, hb});
      x.down_s.push_back(MatrixView{*slot[kDownScale], e * hb * ib, hb, ib, ib});
    }
    if (f.expert_biases) {
      x.gate_up_bias.push_back(MatrixView{*slot[kGateUpBias], e * 2 * I, 1, 2 * I, 2 * I});
      x.down_bias.push_back(MatrixView{*slot[kDownBias], e * H, 1, H, H});
    }
  }
  return x;
}

OutputTensor Out(std::string name, DType dtype, std::vector<int64_t> shape) {
  OutputTensor o;
  o.spec = {std::move(name), dtype, std::move(shape)};
  o.source_dtype = dtype;
  return o;
}

}  // namespace

std::pair<int64_t, int64_t> LocalExperts(int64_t e, int ep_rank, int ep_size) {
  const int64_t base = e / ep_size, rem = e % ep_size;
  const int64_t count = base + (ep_rank < rem ? 1 : 0);
  const int64_t first = ep_rank * base + std::min<int64_t>(ep_rank, rem);
  return {first, count};
}

absl::StatusOr<std::vector<OutputTensor>> BuildVllmOutputs(const FamilyRules& f,
                                                           std::span<const TensorSpec> received,
                                                           const VllmRank& rank) {
  if (rank.tp_size < 1 || rank.ep_size < 1 || rank.tp_rank < 0 || rank.tp_rank >= rank.tp_size ||
      rank.ep_rank < 0 || rank.ep_rank >= rank.ep_size) {
    return absl::InvalidArgumentError(absl::StrCat("vllm rank: tp ", rank.tp_rank, "/",
                                                   rank.tp_size, ", ep ", rank.ep_rank, "/",
                                                   rank.ep_size));
  }
  std::map<std::string, Block> blocks;
  std::vector<std::optional<std::string>> owner(received.size());
  std::vector<std::string> canonical(received.size());
  for (size_t i = 0; i < received.size(); ++i) {
    canonical[i] = ToInMemoryName(f, received[i].name);
    std::optional<Parsed> p = Parse(f, canonical[i]);
    if (!p) continue;
    auto [it, fresh] = blocks.try_emplace(p->prefix);
    Block& b = it->second;
    if (fresh) b.first_index = i, b.prefix = p->prefix;
    const uint32_t idx = static_cast<uint32_t>(i);
    if (p->slot) {
      b.fused[*p->slot] = idx;
    } else {
      (p->scale ? b.s : b.w)[p->expert][p->role] = idx;
    }
    if (!b.w.empty() && (b.fused[kGateUp] || b.fused[kDown])) {
      return Bad(received[i].name, "its block has both per-expert and fused expert tensors");
    }
    owner[i] = p->prefix;
  }
  std::vector<OutputTensor> out;
  for (size_t i = 0; i < received.size(); ++i) {
    if (!owner[i]) {
      out.push_back(CopyOf(received[i], static_cast<uint32_t>(i)));
      out.back().spec.name = ToCheckpointName(f, canonical[i]);
      continue;
    }
    const Block& b = blocks.at(*owner[i]);
    if (b.first_index != i) continue;
    if (b.w.empty() && !b.fused[kGateUp] && !b.fused[kDown]) {
      return Bad(received[i].name, "expert scales or biases without their weights");
    }
    absl::StatusOr<Experts> experts = b.w.empty() ? Fused(f, b, received) : PerExpert(f, b, received);
    if (!experts.ok()) return experts.status();
    const Experts& x = *experts;
    const std::string& name0 = received[i].name;
    if (x.I % rank.tp_size != 0) {
      return Bad(name0, absl::StrCat("intermediate size ", x.I, " is not divisible by tp ",
                                     rank.tp_size));
    }
    const int64_t Itp = x.I / rank.tp_size, r0 = rank.tp_rank * Itp;
    const bool fp8 = x.dtype == DType::kF8E4M3;
    if (fp8 && Itp % kFp8Block != 0) {
      return Bad(name0, absl::StrCat("FP8 w13 needs I_tp % 128 == 0, I_tp is ", Itp));
    }
    if (rank.ep_size > x.E) {
      return Bad(name0, absl::StrCat("expert-parallel size ", rank.ep_size, " exceeds the ", x.E,
                                     " experts of ", b.prefix));
    }
    auto [first, count] = LocalExperts(x.E, rank.ep_rank, rank.ep_size);
    const int64_t hb = Blocks(x.H), rb0 = r0 / kFp8Block, rbn = Itp / kFp8Block;
    OutputTensor w13 = Out(b.prefix + ".w13_weight", x.dtype, {count, 2 * Itp, x.H});
    OutputTensor w2 = Out(b.prefix + ".w2_weight", x.dtype, {count, x.H, Itp});
    OutputTensor s13 = Out(b.prefix + ".w13_weight_scale_inv", DType::kF32, {count, 2 * rbn, hb});
    OutputTensor s2 = Out(b.prefix + ".w2_weight_scale_inv", DType::kF32, {count, hb, rbn});
    // gpt_oss: vLLM adds w2's bias on tensor-parallel rank 0 only (the
    // others hold zeros), so only rank 0 receives it.
    OutputTensor b13 = Out(b.prefix + ".w13_bias", x.dtype, {count, 2 * Itp});
    OutputTensor b2 = Out(b.prefix + ".w2_bias", x.dtype, {count, x.H});
    const bool interleaved = x.up.empty();
    for (int64_t e = first; e < first + count; ++e) {
      if (interleaved) {  // gate and up stay interleaved, as vLLM keeps them
        w13.pieces.push_back(x.gate[e].Rows(2 * r0, 2 * Itp).AsPiece());
      } else {  // this rank's gate rows, then its up rows
        w13.pieces.push_back(x.gate[e].Rows(r0, Itp).AsPiece());
        w13.pieces.push_back(x.up[e].Rows(r0, Itp).AsPiece());
      }
      w2.pieces.push_back(x.down[e].Cols(r0, Itp).AsPiece());
      if (fp8) {
        s13.pieces.push_back(x.gate_s[e].Rows(rb0, rbn).AsPiece());
        s13.pieces.push_back(x.up_s[e].Rows(rb0, rbn).AsPiece());
        s2.pieces.push_back(x.down_s[e].Cols(rb0, rbn).AsPiece());
      }
      if (f.expert_biases) {
        b13.pieces.push_back(x.gate_up_bias[e].Cols(2 * r0, 2 * Itp).AsPiece());
        b2.pieces.push_back(x.down_bias[e].AsPiece());
      }
    }
    out.push_back(std::move(w13));
    out.push_back(std::move(w2));
    if (fp8) {
      out.push_back(std::move(s13));
      out.push_back(std::move(s2));
    }
    if (f.expert_biases) {
      out.push_back(std::move(b13));
      if (rank.tp_rank == 0) out.push_back(std::move(b2));
    }
  }
  for (const OutputTensor& o : out) {
    if (absl::Status s = ValidateOutputTensor(o, received); !s.ok()) return s;
  }
  return out;
}

}  // namespace weightcast
