// Who is calling: the credentials of a local peer on a unix socket, read
// from the kernel (SO_PEERCRED, SO_PEERGROUPS), and the two decisions made
// with them: may this peer use the control socket at all, and may it read
// a file it asks the daemon to register (the daemon must never read for a
// peer what the peer could not read itself).
#ifndef WEIGHTCAST_ACCESS_PEER_H_
#define WEIGHTCAST_ACCESS_PEER_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace weightcast {

struct PeerCredentials {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  std::vector<gid_t> groups;  // supplementary groups, as the peer had them at connect

  [[nodiscard]] bool InGroup(gid_t g) const;
};

// The credentials of the process at the other end of a connected unix
// socket. INTERNAL when the kernel will not say.
[[nodiscard]] absl::StatusOr<PeerCredentials> PeerCredentialsOf(int fd);

// Who may use a control socket: the daemon's own user, root, and the
// members of `group` when one is set.
struct ControlPolicy {
  uid_t owner_uid = 0;
  std::optional<gid_t> group;
};

// OK when `policy` admits `peer`; PERMISSION_DENIED naming the peer's uid
// and pid and who is admitted otherwise.
[[nodiscard]] absl::Status Admit(const ControlPolicy& policy, const PeerCredentials& peer);

// OK when `peer` may read the file at `path`, which the daemon has opened
// as (device, inode). PERMISSION_DENIED naming the path and the uid when it
// may not; FAILED_PRECONDITION when `path` names another file by now (it
// was replaced while being registered).
// How: root may read anything; when the daemon runs as root the path is
// opened on a short-lived thread whose filesystem uid, gid and groups are
// the peer's (the kernel's own check: modes, ACLs, every directory on the
// way); otherwise the peer must be the daemon's own user or own the file.
[[nodiscard]] absl::Status CheckPeerMayRead(const PeerCredentials& peer, const std::string& path,
                                            uint64_t device, uint64_t inode);

// "gid 1001" for a number, or the gid of a group name from the group
// database. INVALID_ARGUMENT for an unknown name.
[[nodiscard]] absl::StatusOr<gid_t> ParseGroup(const std::string& name_or_gid);

}  // namespace weightcast

#endif  // WEIGHTCAST_ACCESS_PEER_H_
