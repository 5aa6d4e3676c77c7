#include "access/control_listener.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "access/control_auth.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

// Answers every call with the caller's uid and pid (as the listener saw
// them) in trailing metadata, or with the authorizer's refusal.
class WhoAmI final : public grpc::CallbackGenericService {
 public:
  explicit WhoAmI(const ControlAuth* auth) : auth_(auth) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    class Reactor : public grpc::ServerGenericBidiReactor {
     public:
      Reactor(grpc::GenericCallbackServerContext* ctx, const ControlAuth* auth) {
        absl::StatusOr<std::optional<PeerCredentials>> who = auth->Authorize(*ctx);
        if (!who.ok()) {
          Finish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED, std::string(who.status().message())));
          return;
        }
        ctx->AddTrailingMetadata("uid", who->has_value() ? absl::StrCat((*who)->uid) : "token");
        ctx->AddTrailingMetadata("pid", who->has_value() ? absl::StrCat((*who)->pid) : "token");
        Finish(grpc::Status::OK);
      }
      void OnDone() override { delete this; }
    };
    return new Reactor(ctx, auth_);
  }

 private:
  const ControlAuth* auth_;
};

grpc::Status Call(const std::string& address, std::string* uid, std::string* pid,
                  const std::string& bearer = "") {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!bearer.empty()) ctx.AddMetadata("authorization", bearer);
  grpc::CompletionQueue cq;
  grpc::ByteBuffer request, response;
  auto call = stub.PrepareUnaryCall(&ctx, "/test.WhoAmI/Ask", request, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  EXPECT_TRUE(cq.Next(&tag, &ok));
  const auto& md = ctx.GetServerTrailingMetadata();
  if (auto it = md.find("uid"); it != md.end()) *uid = std::string(it->second.data(), it->second.size());
  if (auto it = md.find("pid"); it != md.end()) *pid = std::string(it->second.data(), it->second.size());
  return status;
}

class ControlListenerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/wc_listener_testXXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  std::string dir_;
};

TEST_F(ControlListenerTest, AnAdmittedCallerIsKnownByItsCredentials) {
  const std::string path = dir_ + "/run/d.sock";  // the directory is made
  ControlAuth auth = ControlAuth::ByToken("unused");
  WhoAmI service(&auth);
  grpc::ServerBuilder builder;
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<ControlListener>> l =
      ControlListener::Start({.path = path, .policy = {.owner_uid = geteuid()}}, server.get());
  ASSERT_TRUE(l.ok()) << l.status();
  auth = ControlAuth::ByPeer(l->get());

  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat((dir_ + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  std::string uid, pid;
  grpc::Status s = Call("unix:" + path, &uid, &pid);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(uid, absl::StrCat(geteuid()));
  EXPECT_EQ(pid, absl::StrCat(getpid()));

  // A second listener on the same path is refused; the first keeps it.
  absl::StatusOr<std::unique_ptr<ControlListener>> again =
      ControlListener::Start({.path = path, .policy = {.owner_uid = geteuid()}}, server.get());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
  EXPECT_TRUE(Call("unix:" + path, &uid, &pid).ok());

  l->reset();
  EXPECT_NE(access(path.c_str(), F_OK), 0) << "the socket file outlived its listener";
  server->Shutdown(std::chrono::system_clock::now());
}

TEST_F(ControlListenerTest, ACallerThePolicyDoesNotAdmitIsToldWhy) {
  // Root is always admitted (peer_test covers the policy for others; the
  // python access test connects as `nobody`).
  const std::string path = dir_ + "/d.sock";
  ControlAuth auth = ControlAuth::ByToken("unused");
  WhoAmI service(&auth);
  grpc::ServerBuilder builder;
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  // Owned by another uid, so only root gets in.
  absl::StatusOr<std::unique_ptr<ControlListener>> l = ControlListener::Start(
      {.path = path, .policy = {.owner_uid = geteuid() + 1}}, server.get());
  ASSERT_TRUE(l.ok()) << l.status();
  auth = ControlAuth::ByPeer(l->get());
  std::string uid, pid;
  grpc::Status s = Call("unix:" + path, &uid, &pid);
  if (geteuid() == 0) {
    EXPECT_TRUE(s.ok()) << s.error_message();
  } else {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_NE(s.error_message().find(absl::StrCat("uid ", geteuid())), std::string::npos)
        << s.error_message();
  }
  l->reset();
  server->Shutdown(std::chrono::system_clock::now());
}

TEST(ControlAuthTest, TcpCallersNeedTheToken) {
  ControlAuth auth = ControlAuth::ByToken("s3cret");
  WhoAmI service(&auth);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(port, 0);
  const std::string address = absl::StrCat("127.0.0.1:", port);
  std::string uid, pid;
  for (const std::string bad : {"", "s3cret", "Bearer s3cre", "Bearer s3cret2", "Bearer "}) {
    grpc::Status s = Call(address, &uid, &pid, bad);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << bad;
    EXPECT_NE(s.error_message().find("control token"), std::string::npos) << s.error_message();
  }
  grpc::Status s = Call(address, &uid, &pid, "Bearer s3cret");
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(uid, "token");
  server->Shutdown(std::chrono::system_clock::now());
}

TEST(DefaultControlAddressTest, FollowsSystemdThenTheUser) {
  setenv("RUNTIME_DIRECTORY", "/run/wc-test:/run/other", 1);
  EXPECT_EQ(DefaultControlAddress(), "unix:/run/wc-test/weightcastd.sock");
  unsetenv("RUNTIME_DIRECTORY");
  if (geteuid() == 0) {
    EXPECT_EQ(DefaultControlAddress(), "unix:/run/weightcast/weightcastd.sock");
  } else {
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    EXPECT_EQ(DefaultControlAddress(), "unix:/run/user/1000/weightcast/weightcastd.sock");
  }
}

}  // namespace
}  // namespace weightcast
