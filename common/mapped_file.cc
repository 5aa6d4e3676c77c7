#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace weightcast {
namespace {

// The mappings the SIGBUS handler may repair: a fixed table the handler
// reads without locks (a signal handler may not take one). A slot is live
// while `end` is non-zero; Open and ~MappedFile change slots under
// g_slots_mu. More mappings than slots at once go unguarded.
struct GuardSlot {
  std::atomic<uintptr_t> begin{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<uint64_t> faults{0};
};
constexpr int kGuardSlots = 16384;
GuardSlot g_slots[kGuardSlots];
std::atomic<int> g_slots_used{0};  // high-water mark: the handler scans [0, used)
std::mutex g_slots_mu;
struct sigaction g_previous_sigbus;

void RestorePreviousAndReturn(int sig, siginfo_t* info, void* ctx) {
  // Not ours: behave as if this handler were not there. Returning with the
  // previous (usually default) disposition re-raises the fault, fatally.
  if (g_previous_sigbus.sa_flags & SA_SIGINFO) {
    if (g_previous_sigbus.sa_sigaction != nullptr) {
      g_previous_sigbus.sa_sigaction(sig, info, ctx);
      return;
    }
  } else if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN) {
    g_previous_sigbus.sa_handler(sig);
    return;
  }
  ::sigaction(SIGBUS, &g_previous_sigbus, nullptr);
}

void OnSigbus(int sig, siginfo_t* info, void* ctx) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  const int used = g_slots_used.load(std::memory_order_acquire);
  for (int i = 0; i < used; ++i) {
    const uintptr_t end = g_slots[i].end.load(std::memory_order_acquire);
    if (end == 0 || addr < g_slots[i].begin.load(std::memory_order_relaxed) || addr >= end) {
      continue;
    }
    const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    void* at = reinterpret_cast<void*>(addr & ~(page - 1));
    // The file shrank under the mapping: read zeros from here on (mmap is a
    // plain system call, safe in the handler); the owner learns it from
    // CheckUnchanged.
    if (::mmap(at, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
      break;
    }
    g_slots[i].faults.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  RestorePreviousAndReturn(sig, info, ctx);
}

int GuardMapping(const std::byte* data, uint64_t size) {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction sa {};
    sa.sa_sigaction = OnSigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &g_previous_sigbus);
  });
  std::lock_guard<std::mutex> lock(g_slots_mu);
  for (int i = 0; i < kGuardSlots; ++i) {
    if (g_slots[i].end.load(std::memory_order_relaxed) != 0) continue;
    g_slots[i].faults.store(0, std::memory_order_relaxed);
    g_slots[i].begin.store(reinterpret_cast<uintptr_t>(data), std::memory_order_relaxed);
    g_slots[i].end.store(reinterpret_cast<uintptr_t>(data) + size, std::memory_order_release);
    if (i >= g_slots_used.load(std::memory_order_relaxed)) {
      g_slots_used.store(i + 1, std::memory_order_release);
    }
    return i;
  }
  return -1;
}

void UnguardMapping(int slot) {
  if (slot < 0) return;
  std::lock_guard<std::mutex> lock(g_slots_mu);
  g_slots[slot].end.store(0, std::memory_order_release);
}

}  // namespace

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
  if (data != nullptr) file->guard_slot_ = GuardMapping(data, size);
  return file;
}

MappedFile::~MappedFile() {
  // Unguard first: the range may be mapped again by anyone once unmapped.
  UnguardMapping(guard_slot_);
  if (data_ != nullptr) munmap(const_cast<std::byte*>(data_), size_);
}

absl::StatusOr<int64_t> MappedFile::ModifiedNs() const {
  struct stat st;
  if (stat(path_.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": ", std::strerror(errno)));
  }
  return int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
}

uint64_t MappedFile::faults() const {
  return guard_slot_ < 0 ? 0 : g_slots[guard_slot_].faults.load(std::memory_order_relaxed);
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
        path_, ": ", st.st_size, " bytes, shorter than the ", size_, " mapped (truncated)"));
  }
  if (const uint64_t n = faults(); n > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        path_, ": truncated while it was read (", n,
        " page(s) read as zeros); register it again"));
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
