#include "access/peer.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace weightcast {
namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr gid_t kTrainers = 4242;  // a group only the test's peers are in

PeerCredentials Nobody(std::vector<gid_t> groups = {}) {
  return PeerCredentials{.uid = kNobody, .gid = kNogroup, .pid = 1, .groups = std::move(groups)};
}

TEST(AdmitTest, TheOwnerRootAndTheGroupAreAdmittedAndNobodyElse) {
  const ControlPolicy mine{.owner_uid = 1000};
  EXPECT_TRUE(Admit(mine, {.uid = 1000, .gid = 1000}).ok());
  EXPECT_TRUE(Admit(mine, {.uid = 0, .gid = 0}).ok());
  absl::Status s = Admit(mine, Nobody({kTrainers}));
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("uid 65534"), std::string::npos) << s;
  const ControlPolicy team{.owner_uid = 1000, .group = kTrainers};
  EXPECT_TRUE(Admit(team, Nobody({kTrainers})).ok());
  EXPECT_TRUE(Admit(team, {.uid = 77, .gid = kTrainers}).ok());  // primary group
  EXPECT_EQ(Admit(team, Nobody({4243})).code(), absl::StatusCode::kPermissionDenied);
}

TEST(PeerCredentialsTest, TheKernelReportsThisProcessAtTheOtherEnd) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  absl::StatusOr<PeerCredentials> peer = PeerCredentialsOf(sv[0]);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->uid, geteuid());
  EXPECT_EQ(peer->gid, getegid());
  EXPECT_EQ(peer->pid, getpid());
  std::vector<gid_t> groups(getgroups(0, nullptr));
  ASSERT_EQ(getgroups(static_cast<int>(groups.size()), groups.data()),
            static_cast<int>(groups.size()));
  std::sort(groups.begin(), groups.end());
  std::vector<gid_t> got = peer->groups;
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, groups);
  close(sv[0]);
  close(sv[1]);
  EXPECT_EQ(PeerCredentialsOf(-1).status().code(), absl::StatusCode::kInternal);
}

class MayReadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "acting as another user needs root";
    char tmpl[] = "/tmp/wc_peer_testXXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    chmod(dir_.c_str(), 0755);
  }
  void TearDown() override {
    if (!dir_.empty()) std::system(("rm -rf " + dir_).c_str());
  }
  // A file of root's with `mode`; returns its path, sets device and inode.
  std::string File(const std::string& name, mode_t mode, gid_t group = 0) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << "secret";
    chmod(path.c_str(), mode);
    chown(path.c_str(), 0, group);
    struct stat st {};
    stat(path.c_str(), &st);
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    return path;
  }
  absl::Status MayRead(const PeerCredentials& peer, const std::string& path) {
    return CheckPeerMayRead(peer, path, dev_, ino_);
  }
  std::string dir_;
  uint64_t dev_ = 0, ino_ = 0;
};

TEST_F(MayReadTest, TheKernelDecidesAsThePeerWould) {
  const std::string secret = File("secret", 0600);
  absl::Status s = MayRead(Nobody(), secret);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find(secret), std::string::npos) << s;
  EXPECT_NE(s.message().find("uid 65534"), std::string::npos) << s;
  // Root may read it; so may this very process (it is root).
  EXPECT_TRUE(MayRead({.uid = 0}, secret).ok());

  const std::string open = File("open", 0644);
  EXPECT_TRUE(MayRead(Nobody(), open).ok());

  // Group-readable: the peer's supplementary groups count.
  const std::string team = File("team", 0640, kTrainers);
  EXPECT_EQ(MayRead(Nobody(), team).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(MayRead(Nobody({kTrainers}), team).ok());
  EXPECT_TRUE(MayRead({.uid = kNobody, .gid = kTrainers}, team).ok());

  // A readable file behind a directory the peer may not enter.
  ASSERT_EQ(mkdir((dir_ + "/private").c_str(), 0700), 0);
  const std::string hidden = File("private/hidden", 0644);
  EXPECT_EQ(MayRead(Nobody(), hidden).code(), absl::StatusCode::kPermissionDenied);

  // The check ran on a thread of its own: this thread is still root.
  EXPECT_EQ(geteuid(), 0u);
  EXPECT_EQ(access(secret.c_str(), R_OK), 0);
}

TEST_F(MayReadTest, AFileReplacedWhileRegisteredIsRefused) {
  const std::string path = File("swapped", 0644);
  const uint64_t old_ino = ino_;
  File("other", 0644);
  ASSERT_EQ(rename((dir_ + "/other").c_str(), path.c_str()), 0);
  absl::Status s = CheckPeerMayRead(Nobody(), path, dev_, old_ino);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("replaced"), std::string::npos) << s;
}

TEST(ParseGroupTest, NamesAndNumbers) {
  EXPECT_EQ(*ParseGroup("4242"), 4242u);
  EXPECT_EQ(*ParseGroup("root"), 0u);
  absl::StatusOr<gid_t> bad = ParseGroup("no-such-group-here");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("no-such-group-here"), std::string::npos);
}

}  // namespace
}  // namespace weightcast
