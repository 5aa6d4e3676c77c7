// MappedFile: a whole file mapped read-only and shared (MAP_SHARED), so
// writes by another process (a trainer updating its shared-memory file in
// place) are seen. Used for shared-memory tensor files and safetensors.
//
// Reads never kill the process: should the owner truncate the file while it
// is read (its pages past the new end would raise SIGBUS), the process-wide
// SIGBUS handler this class installs puts a zero page where the read
// faulted, counts the fault against this file and lets the read go on.
// CheckUnchanged then reports the file as truncated, so a version read from
// it is refused. A SIGBUS outside every mapping keeps its default action
// (or the handler installed before).
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
  // The mapped file's identity, as fstat saw it when opened.
  [[nodiscard]] uint64_t device() const { return device_; }
  [[nodiscard]] uint64_t inode() const { return inode_; }

  // OK while `path` still names the mapped file (same device and inode) at
  // its mapped size or more and no read of it faulted; FAILED_PRECONDITION
  // naming the path when it was removed, replaced (a new file renamed over
  // it: the mapping would keep showing the old bytes) or truncated (now, or
  // for a while: reads faulted and saw zeros).
  [[nodiscard]] absl::Status CheckUnchanged() const;
  // Reads of this mapping that faulted (and saw a zero page instead).
  [[nodiscard]] uint64_t faults() const;
  // The file's modification time (ns since the epoch): a write(2) to it
  // moves it, so an update can tell whether its sources were written while
  // read. FAILED_PRECONDITION naming the path when it is gone.
  [[nodiscard]] absl::StatusOr<int64_t> ModifiedNs() const;

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
  int guard_slot_ = -1;  // in the SIGBUS handler's table; -1: unguarded
};

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_MAPPED_FILE_H_
