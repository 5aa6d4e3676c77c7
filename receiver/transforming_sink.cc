#include "receiver/transforming_sink.h"

#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/pack_reference.h"

namespace weightcast {

absl::Status TransformingSink::Begin(const GlobalManifest& manifest) {
  Abort();
  received_.clear();
  sources_.clear();
  for (const ManifestTensor& t : manifest.tensors) {
    received_.push_back(t.spec);
    sources_.push_back(HostSource{t.spec, nullptr});
  }
  ASSIGN_OR_RETURN(outputs_, builder_(manifest));
  direct_.assign(received_.size(), -1);
  dependents_.assign(received_.size(), {});
  pending_dependents_.assign(received_.size(), 0);
  missing_sources_.assign(outputs_.size(), 0);
  produced_.assign(outputs_.size(), false);
  held_.clear();
  derived_ = GlobalManifest{};
  derived_.weight_version = manifest.weight_version;
  derived_.config_json = manifest.config_json;
  for (size_t o = 0; o < outputs_.size(); ++o) {
    const OutputTensor& out = outputs_[o];
    derived_.tensors.push_back(ManifestTensor{.spec = out.spec});
    derived_.payload_bytes += out.spec.ByteSize();
    if (IsWholeCopy(out, received_) && direct_[out.pieces[0].source] < 0) {
      direct_[out.pieces[0].source] = static_cast<int64_t>(o);
      continue;
    }
    std::set<uint32_t> sources;
    for (const Piece& p : out.pieces) sources.insert(p.source);
    missing_sources_[o] = sources.size();
    for (uint32_t s : sources) {
      dependents_[s].push_back(o);
      ++pending_dependents_[s];
    }
  }
  begun_ = true;
  return inner_->Begin(derived_);
}

absl::Status TransformingSink::Write(uint32_t tensor, uint64_t offset, const std::byte* data,
                                     uint64_t bytes) {
  if (!begun_ || tensor >= received_.size()) {
    return absl::FailedPreconditionError("Write outside Begin/Commit or unknown tensor");
  }
  if (direct_[tensor] >= 0) {
    RETURN_IF_ERROR(inner_->Write(static_cast<uint32_t>(direct_[tensor]), offset, data, bytes));
    if (offset + bytes == received_[tensor].ByteSize()) produced_[direct_[tensor]] = true;
  }
  if (dependents_[tensor].empty()) return absl::OkStatus();
  auto& [have, buffer] = held_[tensor];
  const uint64_t total = received_[tensor].ByteSize();
  if (buffer.size() != total) buffer.resize(total);
  std::memcpy(buffer.data() + offset, data, bytes);
  have += bytes;
  if (have < total) return absl::OkStatus();
  sources_[tensor].data = buffer.data();
  for (size_t o : dependents_[tensor]) {
    if (--missing_sources_[o] == 0) RETURN_IF_ERROR(Produce(o));
  }
  return absl::OkStatus();
}

absl::Status TransformingSink::Produce(size_t o) {
  const OutputTensor& out = outputs_[o];
  std::vector<std::byte> packed(out.spec.ByteSize());
  RETURN_IF_ERROR(PackOutputRange(out, sources_, 0, packed.size(), packed.data()));
  RETURN_IF_ERROR(inner_->Write(static_cast<uint32_t>(o), 0, packed.data(), packed.size()));
  produced_[o] = true;
  // Free the sources no other output waits for.
  std::set<uint32_t> used;
  for (const Piece& p : out.pieces) used.insert(p.source);
  for (uint32_t s : used) {
    if (--pending_dependents_[s] == 0) {
      held_.erase(s);
      sources_[s].data = nullptr;
    }
  }
  return absl::OkStatus();
}

absl::Status TransformingSink::Prepare() {
  if (!begun_) return absl::FailedPreconditionError("Prepare before Begin");
  for (size_t o = 0; o < outputs_.size(); ++o) {
    if (!produced_[o] && outputs_[o].spec.ByteSize() > 0) {
      return absl::InternalError(absl::StrCat("output '", outputs_[o].spec.name,
                                              "' was never completed"));
    }
  }
  return inner_->Prepare();
}

absl::StatusOr<std::string> TransformingSink::Commit() {
  if (!begun_) return absl::FailedPreconditionError("Commit before Begin");
  RETURN_IF_ERROR(Prepare());
  begun_ = false;
  held_.clear();
  return inner_->Commit();
}

void TransformingSink::Abort() {
  if (!begun_) return;
  begun_ = false;
  held_.clear();
  inner_->Abort();
}

}  // namespace weightcast
