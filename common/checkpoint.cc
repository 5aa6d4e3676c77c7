#include "common/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

namespace weightcast {
namespace fs = std::filesystem;
namespace {

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

absl::Status WriteTextSynced(const std::string& path, const std::string& text, uint32_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode & 07777);
  if (fd < 0) return absl::InternalError(absl::StrCat(path, ": ", std::strerror(errno)));
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      return absl::Status(e == ENOSPC || e == EDQUOT ? absl::StatusCode::kResourceExhausted
                                                     : absl::StatusCode::kInternal,
                          absl::StrCat(path, ": ", std::strerror(e)));
    }
    p += n;
    left -= n;
  }
  const bool ok = ::fsync(fd) == 0;
  const int e = errno;
  ::close(fd);
  if (!ok) return absl::InternalError(absl::StrCat(path, ": fsync: ", std::strerror(e)));
  return absl::OkStatus();
}

void SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::atomic<uint64_t> g_tmp_counter{0};

}  // namespace

absl::StatusOr<CheckpointDir> CheckpointDir::Open(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  }
  std::vector<std::string> shards;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file() && absl::EndsWith(e.path().filename().string(), ".safetensors")) {
      shards.push_back(e.path().string());
    }
  }
  if (shards.empty()) return absl::NotFoundError(absl::StrCat(dir, ": no *.safetensors files"));
  std::sort(shards.begin(), shards.end());
  CheckpointDir out;
  absl::flat_hash_map<std::string, std::string> file_of;
  for (const std::string& shard : shards) {
    ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(shard));
    out.files_.push_back(f.file());
    for (const SafetensorsTensor& t : f.tensors()) {
      auto [it, fresh] = file_of.emplace(t.spec.name, shard);
      if (!fresh) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", t.spec.name, "' is in both ",
                                                       it->second, " and ", shard));
      }
      out.tensors_.push_back(CheckpointTensor{
          .spec = t.spec, .path = shard, .file_offset = t.file_offset, .data = t.data});
    }
  }
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (fs::exists(index_path, ec)) {
    ASSIGN_OR_RETURN(std::string text, ReadText(index_path));
    nlohmann::json idx = nlohmann::json::parse(text, nullptr, false);
    if (idx.is_discarded() || !idx.is_object() || !idx.contains("weight_map") ||
        !idx["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": no weight_map object"));
    }
    const auto& wm = idx["weight_map"];
    for (const auto& [name, shard] : file_of) {
      if (!wm.contains(name) || !wm[name].is_string() ||
          fs::path(shard).filename().string() != wm[name].get<std::string>()) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": tensor '", name, "' is in ", fs::path(shard).filename().string(),
            " but the index says otherwise"));
      }
    }
    if (wm.size() != file_of.size()) {
      for (auto it = wm.begin(); it != wm.end(); ++it) {
        if (!file_of.contains(it.key())) {
          return absl::InvalidArgumentError(absl::StrCat(
              index_path, ": tensor '", it.key(), "' is in the index but in no shard"));
        }
      }
    }
  }
  const std::string config_path = dir + "/config.json";
  if (fs::exists(config_path, ec)) {
    ASSIGN_OR_RETURN(out.config_json_, ReadText(config_path));
    nlohmann::json c = nlohmann::json::parse(out.config_json_, nullptr, false);
    if (c.is_discarded() || !c.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": not a JSON object"));
    }
  }
  return out;
}

std::vector<HostSource> CheckpointDir::sources() const {
  std::vector<HostSource> out;
  out.reserve(tensors_.size());
  for (const CheckpointTensor& t : tensors_) out.push_back(HostSource{t.spec, t.data});
  return out;
}

absl::StatusOr<std::unique_ptr<CheckpointWriter>> CheckpointWriter::Begin(
    const std::string& out_root, uint64_t version, std::vector<TensorSpec> tensors,
    std::string config_json, uint64_t max_shard_bytes, uint32_t file_mode) {
  if (max_shard_bytes == 0) return absl::InvalidArgumentError("max_shard_bytes is 0");
  if ((file_mode & ~0666u) != 0 || (file_mode & 0600) != 0600) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "file mode %04o: give read and write bits only, and the owner both", file_mode));
  }
  std::error_code ec;
  fs::create_directories(out_root, ec);
  if (ec) return absl::InternalError(absl::StrCat(out_root, ": ", ec.message()));
  std::unique_ptr<CheckpointWriter> w(new CheckpointWriter());
  w->out_root_ = out_root;
  w->version_ = version;
  w->config_json_ = std::move(config_json);
  w->file_mode_ = file_mode;
  w->tmp_dir_ = absl::StrCat(out_root, "/.tmp-step_", version, "-", ::getpid(), "-",
                             g_tmp_counter++);
  fs::remove_all(w->tmp_dir_, ec);
  // Search wherever read is allowed: 0640 files live in a 0750 directory.
  if (::mkdir(w->tmp_dir_.c_str(), file_mode | ((file_mode & 0444) >> 2)) != 0) {
    return absl::InternalError(absl::StrCat(w->tmp_dir_, ": ", std::strerror(errno)));
  }
  // Plan shards.
  std::vector<std::vector<size_t>> plan;
  uint64_t in_shard = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t b = tensors[i].ByteSize();
    if (plan.empty() || (in_shard > 0 && in_shard + b > max_shard_bytes)) {
      plan.emplace_back();
      in_shard = 0;
    }
    plan.back().push_back(i);
    in_shard += b;
  }
  if (plan.empty()) plan.emplace_back();
  w->where_.resize(tensors.size());
  for (size_t s = 0; s < plan.size(); ++s) {
    const std::string name =
        plan.size() == 1
            ? "model.safetensors"
            : absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, plan.size());
    std::vector<TensorSpec> specs;
    for (size_t k = 0; k < plan[s].size(); ++k) {
      specs.push_back(tensors[plan[s][k]]);
      w->where_[plan[s][k]] = {s, k};
    }
    ASSIGN_OR_RETURN(auto shard, SafetensorsFileWriter::Create(absl::StrCat(w->tmp_dir_, "/", name),
                                                               std::move(specs),
                                                               {{"format", "pt"}}, file_mode));
    w->shard_names_.push_back(name);
    w->shards_.push_back(std::move(shard));
  }
  w->tensors_ = std::move(tensors);
  return w;
}

CheckpointWriter::~CheckpointWriter() { Abort(); }

std::vector<std::string> CheckpointWriter::ShardNames() const {
  std::vector<std::string> out;
  for (const auto& [shard, _] : where_) out.push_back(shard_names_[shard]);
  return out;
}

absl::Status CheckpointWriter::Write(size_t index, uint64_t offset, const std::byte* data,
                                     uint64_t bytes) {
  if (done_) return absl::FailedPreconditionError("checkpoint already committed or aborted");
  if (index >= where_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("no tensor ", index, " in this checkpoint"));
  }
  const auto [shard, k] = where_[index];
  return shards_[shard]->Write(k, offset, data, bytes);
}

absl::Status CheckpointWriter::Prepare() {
  if (done_) return absl::FailedPreconditionError("checkpoint already committed or aborted");
  if (prepared_) return absl::OkStatus();
  uint64_t total = 0;
  // nlohmann::json objects are sorted maps: the index lists tensors by name
  // (and "metadata" before "weight_map") at n log n.
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < tensors_.size(); ++i) {
    total += tensors_[i].ByteSize();
    weight_map[tensors_[i].name] = shard_names_[where_[i].first];
  }
  for (auto& s : shards_) RETURN_IF_ERROR(s->Finish());
  // The index is written even for one shard: readers can always use it.
  nlohmann::json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = std::move(weight_map);
  RETURN_IF_ERROR(
      WriteTextSynced(tmp_dir_ + "/model.safetensors.index.json", index.dump(2), file_mode_));
  if (!config_json_.empty()) {
    RETURN_IF_ERROR(WriteTextSynced(tmp_dir_ + "/config.json", config_json_, file_mode_));
  }
  SyncDir(tmp_dir_);
  const std::string final_dir = absl::StrCat(out_root_, "/step_", version_);
  std::error_code ec;
  if (fs::exists(final_dir, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(final_dir, " already exists"));
  }
  // The next LATEST, in a name of this writer's own: Commit only renames it.
  const std::string latest_tmp = absl::StrCat(tmp_dir_, ".LATEST");
  RETURN_IF_ERROR(WriteTextSynced(latest_tmp, absl::StrCat(version_, "\n"), file_mode_));
  latest_tmp_ = latest_tmp;
  SyncDir(out_root_);
  prepared_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::string> CheckpointWriter::Commit() {
  RETURN_IF_ERROR(Prepare());
  const std::string final_dir = absl::StrCat(out_root_, "/step_", version_);
  // RENAME_NOREPLACE: never replace a published version, even an empty one
  // another writer created between Prepare's check and the rename.
  if (::renameat2(AT_FDCWD, tmp_dir_.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_NOREPLACE) != 0) {
    const int e = errno;
    if (e == EEXIST || e == ENOTEMPTY) {
      return absl::FailedPreconditionError(absl::StrCat(final_dir, " already exists"));
    }
    return absl::InternalError(absl::StrCat("rename to ", final_dir, ": ", std::strerror(e)));
  }
  const std::string latest = out_root_ + "/LATEST";
  if (::rename(latest_tmp_.c_str(), latest.c_str()) != 0) {
    const int e = errno;
    // Undo the first rename: a step_<version> that LATEST does not name is
    // what readers must never see. Abort then removes both.
    (void)::renameat2(AT_FDCWD, final_dir.c_str(), AT_FDCWD, tmp_dir_.c_str(), RENAME_NOREPLACE);
    return absl::InternalError(absl::StrCat("replacing ", latest, ": ", std::strerror(e)));
  }
  done_ = true;
  SyncDir(out_root_);
  return final_dir;
}

void CheckpointWriter::Abort() {
  if (done_) return;
  done_ = true;
  shards_.clear();
  std::error_code ec;
  fs::remove_all(tmp_dir_, ec);
  if (!latest_tmp_.empty()) fs::remove(latest_tmp_, ec);
}

absl::Status CheckpointWriter::CleanStaleTemps(const std::string& out_root) {
  std::error_code ec;
  if (!fs::is_directory(out_root, ec)) return absl::OkStatus();
  for (const auto& e : fs::directory_iterator(out_root, ec)) {
    if (absl::StartsWith(e.path().filename().string(), ".tmp-step_")) {
      fs::remove_all(e.path(), ec);
      if (ec) return absl::InternalError(absl::StrCat(e.path().string(), ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> CheckpointWriter::KeepNewest(const std::string& out_root, size_t keep) {
  if (keep == 0) return absl::InvalidArgumentError("keep: at least the newest version stays");
  std::vector<uint64_t> versions;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out_root, ec)) {
    const std::string name = e.path().filename().string();
    uint64_t v = 0;
    if (absl::StartsWith(name, "step_") && absl::SimpleAtoi(name.substr(5), &v) &&
        e.is_directory(ec)) {
      versions.push_back(v);
    }
  }
  if (ec) return absl::InternalError(absl::StrCat(out_root, ": ", ec.message()));
  std::sort(versions.rbegin(), versions.rend());
  absl::StatusOr<uint64_t> latest = ReadLatest(out_root);
  size_t removed = 0;
  for (size_t i = keep; i < versions.size(); ++i) {
    if (latest.ok() && versions[i] == *latest) continue;
    const std::string dir = absl::StrCat(out_root, "/step_", versions[i]);
    fs::remove_all(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot remove: ", ec.message()));
    ++removed;
  }
  return removed;
}

absl::StatusOr<uint64_t> CheckpointWriter::ReadLatest(const std::string& out_root) {
  absl::StatusOr<std::string> text = ReadText(out_root + "/LATEST");
  if (!text.ok()) return absl::NotFoundError(absl::StrCat(out_root, ": no LATEST"));
  uint64_t v = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &v)) {
    return absl::InvalidArgumentError(absl::StrCat(out_root, "/LATEST: not a version number"));
  }
  return v;
}

}  // namespace weightcast
