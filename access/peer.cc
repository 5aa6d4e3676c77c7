#include "access/peer.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace weightcast {
namespace {

std::string Who(const PeerCredentials& peer) {
  return absl::StrCat("uid ", peer.uid, " (pid ", peer.pid, ")");
}

// Opens `path` for reading as `peer` would, on a thread of its own: raw
// syscalls change that thread's credentials alone (glibc's wrappers would
// change every thread's), and the thread ends right after. Returns the
// errno of open(2), or 0 with (device, inode) of what was opened.
int OpenAsPeer(const PeerCredentials& peer, const std::string& path, struct stat* st) {
  int err = 0;
  std::thread t([&] {
    if (syscall(SYS_setgroups, peer.groups.size(), peer.groups.data()) != 0 ||
        syscall(SYS_setfsgid, peer.gid) < 0 || syscall(SYS_setfsuid, peer.uid) < 0) {
      err = EPERM;
      return;
    }
    // setfsgid/setfsuid report the previous id, never an error: confirm.
    if (static_cast<uid_t>(syscall(SYS_setfsuid, -1)) != peer.uid) {
      err = EPERM;
      return;
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
      err = errno;
      return;
    }
    if (fstat(fd, st) != 0) err = errno;
    ::close(fd);
  });
  t.join();
  return err;
}

}  // namespace

bool PeerCredentials::InGroup(gid_t g) const {
  return gid == g || std::find(groups.begin(), groups.end(), g) != groups.end();
}

absl::StatusOr<PeerCredentials> PeerCredentialsOf(int fd) {
  struct ucred cred {};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return absl::InternalError(absl::StrCat("SO_PEERCRED: ", std::strerror(errno)));
  }
  PeerCredentials peer{.uid = cred.uid, .gid = cred.gid, .pid = cred.pid};
  std::vector<gid_t> groups(64);
  for (;;) {
    len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      break;
    }
    if (errno != ERANGE || groups.size() > 65536) {
      return absl::InternalError(absl::StrCat("SO_PEERGROUPS: ", std::strerror(errno)));
    }
    groups.resize(std::max<size_t>(groups.size() * 2, len / sizeof(gid_t)));
  }
  peer.groups = std::move(groups);
  return peer;
}

absl::Status Admit(const ControlPolicy& policy, const PeerCredentials& peer) {
  if (peer.uid == 0 || peer.uid == policy.owner_uid) return absl::OkStatus();
  if (policy.group.has_value() && peer.InGroup(*policy.group)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "this daemon's control socket admits uid ", policy.owner_uid,
      policy.group.has_value() ? absl::StrCat(" and members of gid ", *policy.group) : "",
      " only; ", Who(peer), " is neither"));
}

absl::Status CheckPeerMayRead(const PeerCredentials& peer, const std::string& path,
                              uint64_t device, uint64_t inode) {
  if (peer.uid == 0) return absl::OkStatus();
  struct stat st {};
  if (geteuid() == 0) {
    if (const int err = OpenAsPeer(peer, path, &st); err != 0) {
      return absl::PermissionDeniedError(
          absl::StrCat(path, ": ", Who(peer), " may not read it (", std::strerror(err), ")"));
    }
  } else {
    if (peer.uid == geteuid()) return absl::OkStatus();
    if (stat(path.c_str(), &st) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": ", std::strerror(errno), " (removed while being registered)"));
    }
    if (st.st_uid != peer.uid) {
      return absl::PermissionDeniedError(absl::StrCat(
          path, ": owned by uid ", st.st_uid, ", not by the caller, ", Who(peer),
          "; a daemon that is not root can vouch only for files its caller owns"));
    }
  }
  if (static_cast<uint64_t>(st.st_dev) != device || static_cast<uint64_t>(st.st_ino) != inode) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": replaced by another file while being registered"));
  }
  return absl::OkStatus();
}

absl::StatusOr<gid_t> ParseGroup(const std::string& name_or_gid) {
  uint32_t gid = 0;
  if (absl::SimpleAtoi(name_or_gid, &gid)) return static_cast<gid_t>(gid);
  std::vector<char> buf(16384);
  struct group g {};
  struct group* found = nullptr;
  if (getgrnam_r(name_or_gid.c_str(), &g, buf.data(), buf.size(), &found) != 0 ||
      found == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("group '", name_or_gid, "': no such group (give a name or a gid)"));
  }
  return found->gr_gid;
}

}  // namespace weightcast
