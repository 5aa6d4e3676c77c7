#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace weightcast {

absl::StatusOr<std::shared_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it would hold
  // the caller, and the daemon's lock, forever); it is refused below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", std::strerror(e)));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const std::byte* data = nullptr;
  if (size > 0) {
    void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(path, ": mmap: ", std::strerror(e)));
    }
    data = static_cast<const std::byte*>(p);
  }
  ::close(fd);
  auto file = std::shared_ptr<MappedFile>(new MappedFile(path, data, size));
  file->device_ = static_cast<uint64_t>(st.st_dev);
  file->inode_ = static_cast<uint64_t>(st.st_ino);
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) munmap(const_cast<std::byte*>(data_), size_);
}

absl::Status MappedFile::CheckUnchanged() const {
  struct stat st;
  if (stat(path_.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": gone since it was mapped (",
                                                      std::strerror(errno), ")"));
  }
  if (static_cast<uint64_t>(st.st_dev) != device_ || static_cast<uint64_t>(st.st_ino) != inode_) {
    return absl::FailedPreconditionError(absl::StrCat(
        path_, ": replaced by another file since it was mapped (a new file renamed over it); "
               "the mapping still shows the old one"));
  }
  if (static_cast<uint64_t>(st.st_size) < size_) {
    return absl::FailedPreconditionError(absl::StrCat(
        path_, ": ", st.st_size, " bytes, shorter than the ", size_, " mapped"));
  }
  return absl::OkStatus();
}

absl::StatusOr<const std::byte*> MappedFile::Range(uint64_t offset, uint64_t bytes) const {
  if (offset > size_ || bytes > size_ - offset) {
    return absl::InvalidArgumentError(absl::StrCat(
        path_, ": range [", offset, ", ", offset, " + ", bytes, ") is outside the file (",
        size_, " bytes)"));
  }
  return data_ + offset;
}

}  // namespace weightcast
