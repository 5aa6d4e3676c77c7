#include "access/control_listener.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_posix.h>
#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/grpc_listen.h"

namespace weightcast {
namespace {

// "fd:12" -> 12: how gRPC names the peer of a connection handed to it by
// descriptor (grpcpp/server_posix.h).
std::optional<int> DescriptorOf(const std::string& peer) {
  absl::string_view rest = peer;
  int fd = -1;
  if (!absl::ConsumePrefix(&rest, "fd:") || !absl::SimpleAtoi(rest, &fd)) return std::nullopt;
  return fd;
}

absl::Status MakeSocketDir(const std::string& dir, const ControlPolicy& policy) {
  struct stat st {};
  if (lstat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": not a directory"));
    }
    // A directory another user made (or can write to) could hold a socket
    // of theirs in place of ours.
    if ((st.st_uid != geteuid() && st.st_uid != 0) ||
        ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX))) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, ": owned by uid ", st.st_uid, " or writable by every user; the control "
          "socket's directory must belong to the daemon's user or root"));
    }
    return absl::OkStatus();
  }
  if (mkdir(dir.c_str(), policy.group.has_value() ? 0750 : 0700) != 0 && errno != EEXIST) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": mkdir: ", std::strerror(errno)));
  }
  if (policy.group.has_value() && chown(dir.c_str(), static_cast<uid_t>(-1), *policy.group) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": chown to gid ", *policy.group, ": ",
                                                   std::strerror(errno)));
  }
  return absl::OkStatus();
}

class DenyService final : public grpc::CallbackGenericService {
 public:
  explicit DenyService(std::function<std::string(int)> reason) : reason_(std::move(reason)) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    class Reactor : public grpc::ServerGenericBidiReactor {
     public:
      explicit Reactor(std::string why) {
        Finish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED, why));
      }
      void OnDone() override { delete this; }
    };
    const std::optional<int> fd = DescriptorOf(ctx->peer());
    return new Reactor(fd.has_value() ? reason_(*fd) : "not admitted to this control socket");
  }

 private:
  std::function<std::string(int)> reason_;
};

}  // namespace

std::string DefaultControlAddress() {
  std::string dir;
  if (const char* rd = std::getenv("RUNTIME_DIRECTORY"); rd != nullptr && *rd != '\0') {
    dir = rd;
    if (const size_t colon = dir.find(':'); colon != std::string::npos) dir.resize(colon);
  } else if (geteuid() == 0) {
    dir = "/run/weightcast";
  } else if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
    dir = absl::StrCat(xdg, "/weightcast");
  } else {
    dir = absl::StrCat("/tmp/weightcast-", geteuid());
  }
  return absl::StrCat("unix:", dir, "/weightcastd.sock");
}

absl::StatusOr<std::unique_ptr<ControlListener>> ControlListener::Start(const Options& options,
                                                                        grpc::Server* admitted) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (options.path.empty() || options.path.size() >= sizeof(sa.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unix:", options.path, ": a socket path must be 1 to ", sizeof(sa.sun_path) - 1,
        " bytes"));
  }
  const size_t slash = options.path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    if (absl::Status s = MakeSocketDir(options.path.substr(0, slash), options.policy); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = ClaimListenAddress(absl::StrCat("unix:", options.path)); !s.ok()) return s;

  std::unique_ptr<ControlListener> l(new ControlListener());
  l->options_ = options;
  l->admitted_ = admitted;
  std::memcpy(sa.sun_path, options.path.c_str(), options.path.size() + 1);
  l->listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l->listen_fd_ < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  // The socket file is born with the final mode: no moment when any user
  // may connect.
  const mode_t old = umask(options.policy.group.has_value() ? 0117 : 0177);
  const int rc = bind(l->listen_fd_, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa));
  const int err = errno;
  umask(old);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unix:", options.path, ": bind: ", std::strerror(err)));
  }
  if (options.policy.group.has_value() &&
      chown(options.path.c_str(), static_cast<uid_t>(-1), *options.policy.group) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("unix:", options.path, ": chown to gid ",
                                                   *options.policy.group, ": ",
                                                   std::strerror(errno)));
  }
  if (listen(l->listen_fd_, 64) != 0) {
    return absl::InternalError(absl::StrCat("listen: ", std::strerror(errno)));
  }
  l->wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (l->wake_fd_ < 0) return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));

  ControlListener* self = l.get();
  l->deny_service_ = std::make_unique<DenyService>([self](int fd) {
    absl::MutexLock lock(&self->mu_);
    auto it = self->refusals_.find(fd);
    return it != self->refusals_.end() ? it->second : std::string("not admitted");
  });
  grpc::ServerBuilder builder;
  builder.RegisterCallbackGenericService(l->deny_service_.get());
  l->denied_ = builder.BuildAndStart();
  if (l->denied_ == nullptr) return absl::InternalError("cannot start the refusing server");
  l->acceptor_ = std::thread([self] { self->AcceptLoop(); });
  return l;
}

ControlListener::~ControlListener() {
  if (acceptor_.joinable()) {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
    acceptor_.join();
  }
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    unlink(options_.path.c_str());
  }
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (denied_ != nullptr) {
    denied_->Shutdown(std::chrono::system_clock::now());
    denied_->Wait();
  }
}

void ControlListener::AcceptLoop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("control socket {}: poll: {}", options_.path, std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      spdlog::error("control socket {}: accept: {}", options_.path, std::strerror(errno));
      // Out of descriptors: wait a moment rather than spin.
      poll(nullptr, 0, 100);
      continue;
    }
    absl::StatusOr<PeerCredentials> peer = PeerCredentialsOf(fd);
    absl::Status admitted = peer.ok() ? Admit(options_.policy, *peer) : peer.status();
    {
      absl::MutexLock lock(&mu_);
      if (admitted.ok()) {
        admitted_peers_[fd] = *peer;
        refusals_.erase(fd);
      } else {
        admitted_peers_.erase(fd);
        refusals_[fd] = std::string(admitted.message());
      }
    }
    if (admitted.ok()) {
      grpc::AddInsecureChannelFromFd(admitted_, fd);
    } else {
      spdlog::warn("control socket {}: refused a connection: {}", options_.path,
                   std::string(admitted.message()));
      grpc::AddInsecureChannelFromFd(denied_.get(), fd);
    }
  }
}

std::optional<PeerCredentials> ControlListener::PeerOf(const grpc::ServerContextBase& ctx) const {
  const std::optional<int> fd = DescriptorOf(ctx.peer());
  if (!fd.has_value()) return std::nullopt;
  absl::MutexLock lock(&mu_);
  auto it = admitted_peers_.find(*fd);
  if (it == admitted_peers_.end()) return std::nullopt;
  return it->second;
}

}  // namespace weightcast
