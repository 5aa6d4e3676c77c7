#include "common/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace weightcast {
namespace {

using Json = nlohmann::json;

absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// Builds the document as Json::parse does, and notes the first key that an
// object repeats (Json::parse would silently keep one of them). Not a parse
// callback: nlohmann's callback parser rescans the enclosing object at the
// end of every member, which made a header of n tensors cost n^2.
class DuplicateKeySax {
 public:
  explicit DuplicateKeySax(Json& out) : dom_(out, /*allow_exceptions=*/false) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(Json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(Json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(Json::number_float_t v, const std::string& s) {
    return dom_.number_float(v, s);
  }
  bool string(std::string& v) { return dom_.string(v); }
  bool binary(Json::binary_t& v) { return dom_.binary(v); }
  bool start_object(std::size_t n) {
    keys_.emplace_back();
    return dom_.start_object(n);
  }
  bool key(std::string& k) {
    if (!keys_.back().insert(k).second && duplicate_.empty()) duplicate_ = k;
    return dom_.key(k);
  }
  bool end_object() {
    keys_.pop_back();
    return dom_.end_object();
  }
  bool start_array(std::size_t n) { return dom_.start_array(n); }
  bool end_array() { return dom_.end_array(); }
  bool parse_error(std::size_t at, const std::string& token,
                   const nlohmann::detail::exception& e) {
    return dom_.parse_error(at, token, e);
  }

  [[nodiscard]] const std::string& duplicate() const { return duplicate_; }

 private:
  nlohmann::detail::json_sax_dom_parser<Json> dom_;
  std::vector<absl::flat_hash_set<std::string>> keys_;  // per open object
  std::string duplicate_;
};

// Rejects invalid JSON and duplicate keys.
absl::StatusOr<Json> ParseStrict(const std::string& path, const char* begin, const char* end) {
  Json j;
  DuplicateKeySax sax(j);
  if (!Json::sax_parse(begin, end, &sax) || j.is_discarded()) {
    return Bad(path, "header is not valid JSON");
  }
  if (!sax.duplicate().empty()) {
    return Bad(path, absl::StrCat("duplicate key '", sax.duplicate(), "' in header"));
  }
  return j;
}

// The header's JSON, keys in file order. Written out directly: the JSON
// object that keeps insertion order (nlohmann::ordered_json) finds each key
// by a linear scan, which made a header of n tensors cost n^2.
std::string HeaderJson(const std::vector<TensorSpec>& specs, const std::vector<uint64_t>& rel,
                       const std::map<std::string, std::string>& metadata) {
  std::string s = "{";
  if (!metadata.empty()) absl::StrAppend(&s, "\"__metadata__\":", Json(metadata).dump());
  for (size_t i = 0; i < specs.size(); ++i) {
    absl::StrAppend(&s, s.size() > 1 ? "," : "", Json(specs[i].name).dump(), ":{\"dtype\":\"",
                    DTypeName(specs[i].dtype), "\",\"shape\":[",
                    absl::StrJoin(specs[i].shape, ","), "],\"data_offsets\":[", rel[i], ",",
                    rel[i] + specs[i].ByteSize(), "]}");
  }
  s += '}';
  // Pad with spaces so the data starts 8-byte aligned.
  s.append((8 - (8 + s.size()) % 8) % 8, ' ');
  return s;
}

absl::Status PWriteAll(int fd, const std::string& path, const void* data, uint64_t bytes,
                       uint64_t offset) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::pwrite(fd, p, std::min<uint64_t>(bytes, 1 << 30), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat(path, ": write: ", std::strerror(errno)));
    }
    p += n;
    bytes -= n;
    offset += n;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  SafetensorsFile f;
  ASSIGN_OR_RETURN(f.file_, MappedFile::Open(path));
  const uint64_t size = f.file_->size();
  if (size < 8) return Bad(path, "truncated: shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(f.file_->data()[i]) << (8 * i);
  if (n > kMaxSafetensorsHeaderBytes) {
    return Bad(path, absl::StrCat("header length ", n, " exceeds ", kMaxSafetensorsHeaderBytes));
  }
  if (n > size - 8) return Bad(path, absl::StrCat("truncated: header of ", n, " bytes"));
  const char* h = reinterpret_cast<const char*>(f.file_->data() + 8);
  ASSIGN_OR_RETURN(Json j, ParseStrict(path, h, h + n));
  if (!j.is_object()) return Bad(path, "header is not a JSON object");
  const uint64_t data_start = 8 + n;
  const uint64_t data_size = size - data_start;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) return Bad(path, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) return Bad(path, absl::StrCat("__metadata__.", m.key(), " is not a string"));
        f.metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const Json& t = *it;
    const std::string where = absl::StrCat("tensor '", name, "'");
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") ||
        !t.contains("data_offsets") || !t["dtype"].is_string() || !t["shape"].is_array() ||
        !t["data_offsets"].is_array() || t["data_offsets"].size() != 2) {
      return Bad(path, absl::StrCat(where, ": needs dtype, shape and data_offsets [begin, end]"));
    }
    SafetensorsTensor st;
    st.spec.name = name;
    absl::StatusOr<DType> dtype = ParseDType(t["dtype"].get<std::string>());
    if (!dtype.ok()) return Bad(path, absl::StrCat(where, ": ", dtype.status().message()));
    st.spec.dtype = *dtype;
    for (const Json& d : t["shape"]) {
      if (!d.is_number_integer()) return Bad(path, absl::StrCat(where, ": shape must be integers"));
      st.spec.shape.push_back(d.get<int64_t>());
    }
    if (absl::Status s = ValidateTensorSpec(st.spec); !s.ok()) return Bad(path, std::string(s.message()));
    const Json& off = t["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return Bad(path, absl::StrCat(where, ": data_offsets must be non-negative integers"));
    }
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (e < b || e - b != st.spec.ByteSize()) {
      return Bad(path, absl::StrCat(where, ": data_offsets [", b, ", ", e, ") hold ", e - b,
                                    " bytes, its shape needs ", st.spec.ByteSize()));
    }
    if (e > data_size) {
      return Bad(path, absl::StrCat(where, ": data_offsets end ", e, " beyond the data (",
                                    data_size, " bytes): truncated file?"));
    }
    st.file_offset = data_start + b;
    st.data = f.file_->data() + st.file_offset;
    f.tensors_.push_back(std::move(st));
  }
  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const auto& a, const auto& b) {
    return a.file_offset != b.file_offset ? a.file_offset < b.file_offset
                                          : a.spec.ByteSize() < b.spec.ByteSize();
  });
  for (size_t i = 1; i < f.tensors_.size(); ++i) {
    const auto& prev = f.tensors_[i - 1];
    if (prev.file_offset + prev.spec.ByteSize() > f.tensors_[i].file_offset) {
      return Bad(path, absl::StrCat("tensors '", prev.spec.name, "' and '",
                                    f.tensors_[i].spec.name, "' overlap"));
    }
  }
  return f;
}

absl::StatusOr<std::unique_ptr<SafetensorsFileWriter>> SafetensorsFileWriter::Create(
    const std::string& path, std::vector<TensorSpec> specs,
    const std::map<std::string, std::string>& metadata, uint32_t mode) {
  std::unique_ptr<SafetensorsFileWriter> w(new SafetensorsFileWriter());
  w->path_ = path;
  absl::flat_hash_set<std::string> names;
  std::vector<uint64_t> rel;
  uint64_t cursor = 0;
  for (const TensorSpec& s : specs) {
    RETURN_IF_ERROR(ValidateTensorSpec(s));
    if (s.name == "__metadata__" || !names.insert(s.name).second) {
      return Bad(path, absl::StrCat("tensor name '", s.name, "' is reserved or repeated"));
    }
    rel.push_back(cursor);
    cursor += s.ByteSize();
  }
  const std::string header = HeaderJson(specs, rel, metadata);
  w->fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode & 07777);
  if (w->fd_ < 0) {
    return absl::InternalError(absl::StrCat(path, ": create: ", std::strerror(errno)));
  }
  const uint64_t data_start = 8 + header.size();
  const off_t size = static_cast<off_t>(data_start + cursor);
  // Reserve first: with the disk full, nothing of the file is written.
  if (::fallocate(w->fd_, 0, 0, size) != 0) {
    const int e = errno;
    if (e != EOPNOTSUPP && e != ENOSYS) {
      return absl::ResourceExhaustedError(absl::StrCat(path, ": reserving ", size, " bytes: ",
                                                       std::strerror(e)));
    }
  }
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(header.size() >> (8 * i));
  RETURN_IF_ERROR(PWriteAll(w->fd_, path, len, 8, 0));
  RETURN_IF_ERROR(PWriteAll(w->fd_, path, header.data(), header.size(), 8));
  if (::ftruncate(w->fd_, size) != 0) {
    return absl::InternalError(absl::StrCat(path, ": ftruncate: ", std::strerror(errno)));
  }
  for (uint64_t r : rel) w->offsets_.push_back(data_start + r);
  w->written_.assign(specs.size(), 0);
  w->specs_ = std::move(specs);
  return w;
}

SafetensorsFileWriter::~SafetensorsFileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status SafetensorsFileWriter::Write(size_t index, uint64_t offset, const std::byte* data,
                                          uint64_t bytes) {
  if (index >= specs_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": no tensor ", index));
  }
  const uint64_t size = specs_[index].ByteSize();
  if (offset > size || bytes > size - offset) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": write past the end of tensor '",
                                                   specs_[index].name, "'"));
  }
  RETURN_IF_ERROR(PWriteAll(fd_, path_, data, bytes, offsets_[index] + offset));
  written_[index] += bytes;
  return absl::OkStatus();
}

absl::Status SafetensorsFileWriter::Finish() {
  for (size_t i = 0; i < specs_.size(); ++i) {
    if (written_[i] != specs_[i].ByteSize()) {
      return absl::FailedPreconditionError(absl::StrCat(
          path_, ": tensor '", specs_[i].name, "' got ", written_[i], " of ",
          specs_[i].ByteSize(), " bytes"));
    }
  }
  if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
    fd_ = -1;
    return absl::InternalError(absl::StrCat(path_, ": sync: ", std::strerror(errno)));
  }
  fd_ = -1;
  return absl::OkStatus();
}

absl::Status WriteSafetensors(const std::string& path, std::span<const HostSource> tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  for (const HostSource& t : tensors) specs.push_back(t.spec);
  ASSIGN_OR_RETURN(auto w, SafetensorsFileWriter::Create(path, std::move(specs), metadata));
  for (size_t i = 0; i < tensors.size(); ++i) {
    RETURN_IF_ERROR(w->Write(i, 0, tensors[i].data, tensors[i].spec.ByteSize()));
  }
  return w->Finish();
}

}  // namespace weightcast
