// MappedFile: a whole file mapped read-only and shared (MAP_SHARED), so
// writes by another process (a trainer updating its shared-memory file in
// place) are seen. Used for shared-memory tensor files and safetensors.
#ifndef WEIGHTCAST_COMMON_MAPPED_FILE_H_
#define WEIGHTCAST_COMMON_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace weightcast {

class MappedFile {
 public:
  // NOT_FOUND if missing, INVALID_ARGUMENT for anything but a readable
  // regular file (directories, FIFOs, devices); never blocks; messages name
  // the path.
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  [[nodiscard]] const std::byte* data() const { return data_; }
  [[nodiscard]] uint64_t size() const { return size_; }
  [[nodiscard]] const std::string& path() const { return path_; }

  // OK while `path` still names the mapped file (same device and inode) at
  // its mapped size or more; FAILED_PRECONDITION naming the path when it was
  // removed, replaced (a new file renamed over it: the mapping would keep
  // showing the old bytes) or truncated (reads would fault).
  [[nodiscard]] absl::Status CheckUnchanged() const;

  // Pointer to [offset, offset + bytes); INVALID_ARGUMENT naming the path,
  // offset, length and file size when it does not fit.
  [[nodiscard]] absl::StatusOr<const std::byte*> Range(uint64_t offset, uint64_t bytes) const;

 private:
  MappedFile(std::string path, const std::byte* data, uint64_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const std::byte* data_;
  uint64_t size_;
  uint64_t device_ = 0, inode_ = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_MAPPED_FILE_H_
