#include "common/grpc_listen.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <grpc/grpc.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace weightcast {

absl::Status ClaimListenAddress(const std::string& address) {
  if (!absl::StartsWith(address, "unix:")) return absl::OkStatus();
  const std::string path = address.substr(5);
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return absl::OkStatus();  // nothing there
  if (!S_ISSOCK(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(address, ": ", path, " exists and is not a socket"));
  }
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof(sa.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(address, ": socket path too long"));
  }
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  const int rc = connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa));
  const int err = errno;
  close(fd);
  if (rc == 0) {
    return absl::AlreadyExistsError(
        absl::StrCat(address, ": another process is listening there"));
  }
  if (err != ECONNREFUSED) {
    return absl::UnavailableError(absl::StrCat(address, ": ", std::strerror(err)));
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::UnavailableError(
        absl::StrCat(address, ": cannot remove the stale socket: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

void DisablePortSharing(grpc::ServerBuilder& builder) {
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
}

}  // namespace weightcast
