#include "formats/vllm_layout.h"

#include <map>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace weightcast {
namespace {

struct ExpertSet {
  size_t first_index = 0;
  // expert -> (gate, up, down) tensor index; and their scales, if FP8.
  std::map<int64_t, std::array<std::optional<uint32_t>, 3>> w, s;
};

absl::Status Bad(const std::string& t, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("tensor '", t, "': ", why));
}

int64_t Blocks(int64_t n) { return (n + kFp8Block - 1) / kFp8Block; }

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
  // Find the per-expert tensors: "<P>.<e>.<proj>.weight[_scale_inv]".
  std::map<std::string, ExpertSet> sets;
  std::vector<std::optional<std::string>> owner(received.size());
  const std::string anchor = absl::StrCat(f.block, ".experts.");
  for (size_t i = 0; i < received.size() && f.moe; ++i) {
    const std::string& n = received[i].name;
    const size_t at = n.rfind(anchor);
    if (at == std::string::npos || (at > 0 && n[at - 1] != '.')) continue;
    const std::string prefix = n.substr(0, at + anchor.size() - 1);
    const std::string rest = n.substr(at + anchor.size());
    const size_t dot = rest.find('.');
    int64_t e = 0;
    if (dot == std::string::npos || !absl::SimpleAtoi(rest.substr(0, dot), &e)) continue;
    const std::string proj = rest.substr(dot + 1);
    int role = -1;
    bool scale = false;
    for (int r = 0; r < 3; ++r) {
      const std::string& p = r == 0 ? f.gate : r == 1 ? f.up : f.down;
      if (proj == p + ".weight") role = r;
      if (proj == p + ".weight_scale_inv") role = r, scale = true;
    }
    if (role < 0) continue;
    auto [it, fresh] = sets.try_emplace(prefix);
    if (fresh) it->second.first_index = i;
    (scale ? it->second.s : it->second.w)[e][role] = static_cast<uint32_t>(i);
    owner[i] = prefix;
  }
  std::vector<OutputTensor> out;
  for (size_t i = 0; i < received.size(); ++i) {
    if (!owner[i]) {
      out.push_back(CopyOf(received[i], static_cast<uint32_t>(i)));
      continue;
    }
    const ExpertSet& set = sets.at(*owner[i]);
    if (set.first_index != i) continue;
    const std::string& prefix = *owner[i];
    const int64_t E = set.w.rbegin()->first + 1;
    for (int64_t e = 0; e < E; ++e) {
      for (int r = 0; r < 3; ++r) {
        if (!set.w.count(e) || !set.w.at(e)[r]) {
          const std::string& p = r == 0 ? f.gate : r == 1 ? f.up : f.down;
          return Bad(absl::StrCat(prefix, ".", e, ".", p, ".weight"), "missing");
        }
      }
    }
    const TensorSpec& g0 = received[*set.w.at(0)[0]];
    if (g0.shape.size() != 2) return Bad(g0.name, "expert weights must be 2-D");
    const int64_t I = g0.shape[0], H = g0.shape[1];
    if (I % rank.tp_size != 0) {
      return Bad(g0.name, absl::StrCat("intermediate size ", I, " is not divisible by tp ",
                                       rank.tp_size));
    }
    const int64_t Itp = I / rank.tp_size, r0 = rank.tp_rank * Itp;
    const bool fp8 = g0.dtype == DType::kF8E4M3;
    if (fp8 && Itp % kFp8Block != 0) {
      return Bad(g0.name, absl::StrCat("FP8 w13 needs I_tp % 128 == 0, I_tp is ", Itp));
    }
    auto [first, count] = LocalExperts(E, rank.ep_rank, rank.ep_size);
    OutputTensor w13, w2, s13, s2;
    w13.spec = {prefix + ".w13_weight", g0.dtype, {count, 2 * Itp, H}};
    w2.spec = {prefix + ".w2_weight", g0.dtype, {count, H, Itp}};
    w13.source_dtype = w2.source_dtype = g0.dtype;
    s13.spec = {prefix + ".w13_weight_scale_inv", DType::kF32, {count, 2 * (Itp / kFp8Block), Blocks(H)}};
    s2.spec = {prefix + ".w2_weight_scale_inv", DType::kF32, {count, Blocks(H), Itp / kFp8Block}};
    s13.source_dtype = s2.source_dtype = DType::kF32;
    for (int64_t e = first; e < first + count; ++e) {
      const auto& w = set.w.at(e);
      for (int r = 0; r < 3; ++r) {
        const TensorSpec& t = received[*w[r]];
        const std::vector<int64_t> want = r == 2 ? std::vector<int64_t>{H, I} : std::vector<int64_t>{I, H};
        if (t.shape != want || t.dtype != g0.dtype) {
          return Bad(t.name, "shape or dtype differs from the block's first expert");
        }
      }
      // gate rows, then up rows, of this TP rank.
      w13.pieces.push_back(Piece{*w[0], static_cast<uint64_t>(r0 * H), (uint64_t)Itp, (uint64_t)H, (uint64_t)H});
      w13.pieces.push_back(Piece{*w[1], static_cast<uint64_t>(r0 * H), (uint64_t)Itp, (uint64_t)H, (uint64_t)H});
      // down columns of this TP rank.
      w2.pieces.push_back(Piece{*w[2], static_cast<uint64_t>(r0), (uint64_t)H, (uint64_t)Itp, (uint64_t)I});
      if (!fp8) continue;
      if (!set.s.count(e) || !set.s.at(e)[0] || !set.s.at(e)[1] || !set.s.at(e)[2]) {
        return Bad(received[*w[0]].name, "FP8 expert without its weight_scale_inv tensors");
      }
      const auto& s = set.s.at(e);
      const uint64_t hb = Blocks(H), ib = Blocks(I), rb0 = r0 / kFp8Block, rbn = Itp / kFp8Block;
      s13.pieces.push_back(Piece{*s[0], rb0 * hb, rbn, hb, hb});
      s13.pieces.push_back(Piece{*s[1], rb0 * hb, rbn, hb, hb});
      s2.pieces.push_back(Piece{*s[2], rb0, hb, rbn, ib});
    }
    out.push_back(std::move(w13));
    out.push_back(std::move(w2));
    if (fp8) {
      out.push_back(std::move(s13));
      out.push_back(std::move(s2));
    }
  }
  for (const OutputTensor& o : out) {
    if (absl::Status s = ValidateOutputTensor(o, received); !s.ok()) return s;
  }
  return out;
}

}  // namespace weightcast
