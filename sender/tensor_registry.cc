#include "sender/tensor_registry.h"

#include <sys/stat.h>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/checkpoint.h"
#include "common/config_json.h"
#include "common/status_macros.h"
#include "kernels/cuda_ipc.h"

namespace weightcast {
namespace {

absl::Status Named(const TensorSpec& spec, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat("tensor '", spec.name, "': ", s.message()));
}

absl::Status ValidateIpcLocation(const TensorSpec& spec, const CudaIpcLocation& loc) {
  if (loc.ipc_handle.size() != kCudaIpcHandleBytes) {
    return Named(spec, absl::InvalidArgumentError(absl::StrCat(
                           "CUDA IPC handle of ", loc.ipc_handle.size(), " bytes, expected ",
                           kCudaIpcHandleBytes, " (a raw cudaIpcMemHandle_t)")));
  }
  if (loc.device < 0) {
    return Named(spec, absl::InvalidArgumentError(absl::StrCat("CUDA device ", loc.device)));
  }
  const uint64_t bytes = spec.ByteSize();
  if (loc.allocation_bytes == 0 || loc.offset > loc.allocation_bytes ||
      bytes > loc.allocation_bytes - loc.offset) {
    return Named(spec, absl::InvalidArgumentError(absl::StrCat(
                           "bytes [", loc.offset, ", ", loc.offset + bytes,
                           ") outside its CUDA allocation of ", loc.allocation_bytes, " bytes")));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status TensorRegistry::Add(const std::vector<TensorRegistration>& tensors, bool replace,
                                 const ReadCheck& may_read) {
  std::vector<Entry> fresh;
  fresh.reserve(tensors.size());
  absl::flat_hash_set<std::string> names;
  // Files are mapped once per path per call.
  absl::flat_hash_map<std::string, std::shared_ptr<MappedFile>> files;
  for (const TensorRegistration& t : tensors) {
    RETURN_IF_ERROR(ValidateTensorSpec(t.spec));
    if (!names.insert(t.spec.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.spec.name, "' appears twice in the request"));
    }
    if (const auto* ipc = std::get_if<CudaIpcLocation>(&t.location)) {
      RETURN_IF_ERROR(ValidateIpcLocation(t.spec, *ipc));
      fresh.push_back(Entry{.spec = t.spec, .ipc = *ipc});
      continue;
    }
    const ShmLocation& loc = std::get<ShmLocation>(t.location);
    if (loc.path.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.spec.name, "': empty path"));
    }
    auto it = files.find(loc.path);
    if (it == files.end()) {
      absl::StatusOr<std::shared_ptr<MappedFile>> f = MappedFile::Open(loc.path);
      if (!f.ok()) {
        return Named(t.spec, absl::InvalidArgumentError(f.status().message()));
      }
      if (may_read) {
        if (absl::Status s = may_read(loc.path, (*f)->device(), (*f)->inode()); !s.ok()) {
          return Named(t.spec, s);
        }
      }
      it = files.emplace(loc.path, *std::move(f)).first;
    }
    absl::StatusOr<const std::byte*> range = it->second->Range(loc.offset, t.spec.ByteSize());
    if (!range.ok()) return Named(t.spec, range.status());
    fresh.push_back(Entry{.spec = t.spec, .file = it->second, .offset = loc.offset});
  }
  if (replace) {
    entries_.clear();
    config_json_.clear();
  }
  absl::flat_hash_map<std::string, size_t> index;
  for (size_t i = 0; i < entries_.size(); ++i) index[entries_[i].spec.name] = i;
  for (Entry& e : fresh) {
    auto it = index.find(e.spec.name);
    if (it != index.end()) {
      entries_[it->second] = std::move(e);
    } else {
      index[e.spec.name] = entries_.size();
      entries_.push_back(std::move(e));
    }
  }
  return absl::OkStatus();
}

absl::Status TensorRegistry::AddCheckpointDir(const std::string& dir, bool replace,
                                              const ReadCheck& may_read) {
  ASSIGN_OR_RETURN(CheckpointDir ckpt, CheckpointDir::Open(dir));
  if (may_read && !ckpt.config_json().empty()) {
    const std::string config = dir + "/config.json";
    struct stat st {};
    if (stat(config.c_str(), &st) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(config, ": removed while registering"));
    }
    RETURN_IF_ERROR(may_read(config, static_cast<uint64_t>(st.st_dev),
                             static_cast<uint64_t>(st.st_ino)));
  }
  std::vector<TensorRegistration> regs;
  for (const CheckpointTensor& t : ckpt.tensors()) {
    regs.push_back(TensorRegistration{
        .spec = t.spec, .location = ShmLocation{.path = t.path, .offset = t.file_offset}});
  }
  if (!ckpt.config_json().empty()) {
    RETURN_IF_ERROR(ValidateConfigJson(ckpt.config_json(), dir + "/config.json"));
  }
  RETURN_IF_ERROR(Add(regs, replace, may_read));
  if (!ckpt.config_json().empty()) config_json_ = ckpt.config_json();
  return absl::OkStatus();
}

absl::Status TensorRegistry::SetConfigJson(const std::string& json) {
  RETURN_IF_ERROR(ValidateConfigJson(json, "config_json"));
  config_json_ = json;
  return absl::OkStatus();
}

uint64_t TensorRegistry::total_bytes() const {
  uint64_t n = 0;
  for (const Entry& e : entries_) n += e.spec.ByteSize();
  return n;
}

absl::StatusOr<RegistrySnapshot> TensorRegistry::Snapshot() const {
  RegistrySnapshot snap;
  snap.config_json = config_json_;
  absl::flat_hash_set<const MappedFile*> checked;
  for (const Entry& e : entries_) {
    if (e.ipc.has_value()) {
      snap.device_sources.push_back(DeviceSourceRef{.index = snap.sources.size(), .location = *e.ipc});
      snap.sources.push_back(HostSource{.spec = e.spec, .data = nullptr});
      continue;
    }
    if (checked.insert(e.file.get()).second) {
      // Per update: a file that shrank would fault on read, one replaced
      // would silently send the old bytes.
      if (absl::Status s = e.file->CheckUnchanged(); !s.ok()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "tensor '", e.spec.name, "': ", s.message(), "; register it again"));
      }
      snap.files.push_back(e.file);
    }
    ASSIGN_OR_RETURN(const std::byte* data, e.file->Range(e.offset, e.spec.ByteSize()));
    snap.sources.push_back(HostSource{.spec = e.spec, .data = data});
  }
  return snap;
}

}  // namespace weightcast
