#include "receiver/parameter_sink.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/pack_table.h"

namespace weightcast {
namespace {

uint64_t RoundUp(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

// `n` contiguous bytes as one copy-table row.
CopyEntry ByteCopy(std::byte* dst, const std::byte* src, uint64_t n) {
  CopyEntry e;
  e.src = Addr(src);
  e.dst = Addr(dst);
  e.src_row_stride = n;
  e.dst_row_stride = n;
  e.rows = 1;
  e.cols = n;
  e.elem_size = 1;
  return e;
}

}  // namespace

ParameterSink::ParameterSink(int device, absl::flat_hash_map<std::string, ParameterTarget> targets,
                             Mode mode, LayoutBuilder layout)
    : device_(device), targets_(std::move(targets)), mode_(mode), layout_(std::move(layout)) {}

ParameterSink::ParameterSink(std::unique_ptr<ParameterCopier> copier,
                             absl::flat_hash_map<std::string, ParameterTarget> targets, Mode mode,
                             LayoutBuilder layout)
    : device_(copier->device()),
      copier_(std::move(copier)),
      targets_(std::move(targets)),
      mode_(mode),
      layout_(std::move(layout)) {}

ParameterSink::~ParameterSink() { Reset(); }

void ParameterSink::Reset() {
  // Nothing may still read or write a buffer freed below.
  if (copier_ != nullptr) (void)copier_->Wait();
  manifest_ = nullptr;
  outputs_.clear();
  target_of_.clear();
  direct_.clear();
  dependents_.clear();
  arrived_.clear();
  written_.clear();
  holds_ = HoldPlan{};
  shadow_offset_.clear();
  staging_used_ = 0;
  table_.clear();
}

absl::Status ParameterSink::Begin(const GlobalManifest& manifest) {
  // manifest_ is set only once everything is ready: after a failed Begin,
  // Write and Commit refuse instead of reaching unchecked targets.
  Reset();
  if (absl::Status s = Prepare(manifest); !s.ok()) {
    Reset();
    return s;
  }
  manifest_ = &manifest;
  return absl::OkStatus();
}

absl::Status ParameterSink::Prepare(const GlobalManifest& m) {
  if (layout_) {
    ASSIGN_OR_RETURN(outputs_, layout_(m));
  } else {
    ASSIGN_OR_RETURN(outputs_, IdentityLayout(m));
  }
  std::vector<TensorSpec> received;
  received.reserve(m.tensors.size());
  for (const ManifestTensor& t : m.tensors) received.push_back(t.spec);
  absl::flat_hash_set<std::string> names;
  target_of_.assign(outputs_.size(), nullptr);
  for (size_t o = 0; o < outputs_.size(); ++o) {
    const OutputTensor& out = outputs_[o];
    const std::string& name = out.spec.name;
    RETURN_IF_ERROR(ValidateOutputTensor(out, received));
    if (out.quant != QuantKind::kNone) {
      return absl::UnimplementedError(absl::StrCat(
          "tensor '", name, "': a receiver layout only moves bytes (FP8 is the senders')"));
    }
    auto it = targets_.find(name);
    if (it == targets_.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("tensor '", name, "' has no target parameter on this rank"));
    }
    if (it->second.bytes != out.spec.ByteSize() ||
        (it->second.data == nullptr && it->second.bytes != 0)) {
      return absl::FailedPreconditionError(absl::StrCat("tensor '", name, "': ",
                                                        out.spec.ByteSize(),
                                                        " bytes arrive, its target has ",
                                                        it->second.bytes));
    }
    target_of_[o] = &it->second;
    names.insert(name);
  }
  for (const auto& [name, target] : targets_) {
    if (!names.contains(name)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "target parameter '", name, "' is not a tensor of version ", m.weight_version,
          " (", outputs_.size(), " tensors, ", targets_.size(), " targets)"));
    }
  }
  direct_.assign(received.size(), -1);
  dependents_.assign(received.size(), {});
  arrived_.assign(received.size(), 0);
  written_.assign(outputs_.size(), 0);
  for (size_t o = 0; o < outputs_.size(); ++o) {
    const OutputTensor& out = outputs_[o];
    if (out.spec.ByteSize() == 0) continue;  // nothing to write
    if (IsWholeCopy(out, received) && direct_[out.pieces[0].source] < 0) {
      direct_[out.pieces[0].source] = static_cast<int64_t>(o);
      continue;
    }
    uint64_t at = 0;  // output element where the piece starts
    for (uint32_t i = 0; i < out.pieces.size(); ++i) {
      const Piece& p = out.pieces[i];
      if (p.NumElements() > 0) {
        dependents_[p.source].push_back(
            PieceRef{.output = static_cast<uint32_t>(o), .piece = i, .start = at});
      }
      at += p.NumElements();
    }
  }
  if (copier_ == nullptr) {
    ASSIGN_OR_RETURN(copier_, NewCudaParameterCopier(device_));
  }
  // Split sources of assembled outputs are held until their last segment.
  holds_ = PlanHolds(m, [&](uint32_t t) { return !dependents_[t].empty(); });
  RETURN_IF_ERROR(hold_.Reserve(
      *copier_, holds_.arena_bytes,
      absl::StrCat("holding the split tensors of version ", m.weight_version)));
  // The largest table a bucket queues: a row per segment of a whole copy,
  // and the pieces of every source that completes in it; staged, Commit's
  // one entry per output.
  size_t entries = 0;
  for (const auto& segments : m.bucket_segments) {
    size_t e = 0;
    for (const auto& [t, seg] : segments) {
      if (t >= received.size()) continue;
      if (direct_[t] >= 0) ++e;
      if (seg.tensor_offset + seg.bytes == received[t].ByteSize()) {
        e += kMaxCopyEntriesPerPiece * dependents_[t].size();
      }
    }
    entries = std::max(entries, e);
  }
  if (mode_ == Mode::kStaged) entries = std::max(entries, outputs_.size());
  table_.reserve(entries);
  RETURN_IF_ERROR(copier_->ReserveTable(entries));
  if (device_ >= 0 && write_device_ < 0) {
    // Host buckets are copied up, segment by segment, before the copies.
    uint64_t need = 0;
    for (const auto& segments : m.bucket_segments) {
      uint64_t bucket = 0;
      for (const auto& [t, seg] : segments) bucket += RoundUp(seg.bytes, 16);
      need = std::max(need, bucket);
    }
    RETURN_IF_ERROR(staging_.Reserve(*copier_, need, "staging host buckets"));
  }
  if (mode_ == Mode::kStaged) {
    uint64_t total = 0;
    shadow_offset_.assign(outputs_.size(), 0);
    for (size_t o = 0; o < outputs_.size(); ++o) {
      shadow_offset_[o] = total;
      total += RoundUp(outputs_[o].spec.ByteSize(), 256);
    }
    RETURN_IF_ERROR(
        shadow_.Reserve(*copier_, total, absl::StrCat("staging version ", m.weight_version)));
  }
  return absl::OkStatus();
}

std::byte* ParameterSink::Destination(size_t o) const {
  if (mode_ == Mode::kStaged) return shadow_.data() + shadow_offset_[o];
  return static_cast<std::byte*>(target_of_[o]->data);
}

absl::Status ParameterSink::SourceComplete(uint32_t s, const std::byte* data) {
  for (const PieceRef& d : dependents_[s]) {
    const size_t first = table_.size();
    RETURN_IF_ERROR(BuildPackTableForPiece(outputs_[d.output], d.piece, d.start, Addr(data),
                                           Addr(Destination(d.output)), &table_));
    for (size_t i = first; i < table_.size(); ++i) {
      written_[d.output] += table_[i].rows * table_[i].cols * table_[i].elem_size;
    }
    if (mode_ == Mode::kInPlace && table_.size() > first) dirty_ = true;
  }
  return absl::OkStatus();
}

absl::Status ParameterSink::Write(uint32_t tensor, uint64_t offset, const std::byte* data,
                                  uint64_t bytes) {
  if (manifest_ == nullptr || tensor >= arrived_.size()) {
    return absl::InternalError("write outside a version");
  }
  const TensorSpec& spec = manifest_->tensors[tensor].spec;
  const uint64_t total = spec.ByteSize();
  if (offset != arrived_[tensor] || bytes > total - offset) {
    return absl::InternalError(absl::StrCat("tensor '", spec.name, "': segment [", offset, ", +",
                                            bytes, ") out of order or past its ", total,
                                            " bytes"));
  }
  arrived_[tensor] += bytes;
  const int64_t direct = direct_[tensor];
  if ((direct < 0 && dependents_[tensor].empty()) || bytes == 0) return absl::OkStatus();
  const std::byte* src = data;
  if (device_ >= 0 && write_device_ < 0) {
    if (staging_used_ + bytes > staging_.capacity()) {
      return absl::InternalError(absl::StrCat("tensor '", spec.name, "': bucket larger than planned"));
    }
    std::byte* at = staging_.data() + staging_used_;
    RETURN_IF_ERROR(copier_->CopyFromHost(at, data, bytes));
    staging_used_ += RoundUp(bytes, 16);
    src = at;
  }
  if (direct >= 0) {
    table_.push_back(ByteCopy(Destination(direct) + offset, src, bytes));
    written_[direct] += bytes;
    if (mode_ == Mode::kInPlace) dirty_ = true;
  }
  if (dependents_[tensor].empty()) return absl::OkStatus();
  if (offset == 0 && bytes == total) return SourceComplete(tensor, src);
  if (!holds_.Holds(tensor)) {
    return absl::InternalError(absl::StrCat("tensor '", spec.name, "': segment [", offset, ", +",
                                            bytes, ") of a tensor the manifest has whole"));
  }
  // Its bytes in the arena are its own until the bucket of its last segment
  // ended (EndBucket waits for the copies that read them).
  std::byte* held = hold_.data() + holds_.offset[tensor];
  RETURN_IF_ERROR(copier_->Copy(held + offset, src, bytes));
  if (arrived_[tensor] < total) return absl::OkStatus();
  return SourceComplete(tensor, held);
}

absl::Status ParameterSink::EndBucket() {
  if (copier_ == nullptr) return absl::OkStatus();
  absl::Status run = copier_->Run(table_);
  table_.clear();
  absl::Status wait = copier_->Wait();  // the bucket's slot is reused next
  staging_used_ = 0;
  return run.ok() ? wait : run;
}

absl::Status ParameterSink::Prepare() {
  if (manifest_ == nullptr) return absl::InternalError("prepare outside a version");
  for (size_t o = 0; o < outputs_.size(); ++o) {
    const uint64_t want = outputs_[o].spec.ByteSize();
    if (written_[o] != want) {
      return absl::InternalError(absl::StrCat("tensor '", outputs_[o].spec.name, "': ",
                                              written_[o], " of ", want, " bytes arrived"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ParameterSink::Commit() {
  if (manifest_ == nullptr) return absl::InternalError("commit outside a version");
  RETURN_IF_ERROR(Prepare());
  if (mode_ == Mode::kStaged) {
    std::vector<CopyEntry> publish;
    for (size_t o = 0; o < outputs_.size(); ++o) {
      const uint64_t n = outputs_[o].spec.ByteSize();
      if (n == 0) continue;
      publish.push_back(ByteCopy(static_cast<std::byte*>(target_of_[o]->data),
                                 shadow_.data() + shadow_offset_[o], n));
    }
    absl::Status run = copier_->Run(publish);
    absl::Status wait = copier_->Wait();
    if (!run.ok() || !wait.ok()) {
      dirty_ = true;  // some parameters may hold the new version already
      return run.ok() ? wait : run;
    }
  }
  const uint64_t version = manifest_->weight_version;
  const size_t n = outputs_.size();
  Reset();
  dirty_ = false;  // the parameters hold a whole version again
  return absl::StrCat("version ", version, " in ", n, " parameters");
}

void ParameterSink::Abort() { Reset(); }

}  // namespace weightcast
