#include "transport/rendezvous.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc_listen.h"
#include "common/secret.h"
#include "common/grpc_status.h"

namespace weightcast {
namespace {

// One server-side Wait never blocks longer than this; clients loop.
constexpr absl::Duration kMaxServerWait = absl::Seconds(10);
// Client-side slices, so Cancel() is honoured promptly.
constexpr absl::Duration kClientSlice = absl::Seconds(1);

}  // namespace

absl::Status RendezvousStore::Set(const std::string& key, std::string value) {
  if (key.empty() || key.size() > kMaxRendezvousKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("rendezvous key of ", key.size(), " bytes"));
  }
  if (value.size() > kMaxRendezvousValueBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous value for '", key, "' of ", value.size(), " bytes"));
  }
  absl::MutexLock lock(&mu_);
  if (!kv_.contains(key) && kv_.size() >= kMaxRendezvousKeys) {
    return absl::ResourceExhaustedError("rendezvous store is full");
  }
  kv_[key] = std::move(value);
  return absl::OkStatus();
}

absl::StatusOr<std::string> RendezvousStore::Get(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  auto it = kv_.find(key);
  if (it == kv_.end()) return absl::NotFoundError(absl::StrCat("rendezvous key '", key, "'"));
  return it->second;
}

absl::Status RendezvousStore::Wait(const std::vector<std::string>& keys,
                                   absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  auto ready = [&] {
    if (shutdown_) return true;
    for (const auto& k : keys) {
      if (!kv_.contains(k)) return false;
    }
    return true;
  };
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  if (shutdown_) return absl::CancelledError("rendezvous is shutting down");
  std::vector<std::string> missing;
  for (const auto& k : keys) {
    if (!kv_.contains(k)) missing.push_back(k);
  }
  if (missing.empty()) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat("rendezvous: still missing ", absl::StrJoin(missing, ", ")));
}

absl::StatusOr<uint64_t> RendezvousStore::ErasePrefix(const std::string& prefix) {
  if (prefix.empty()) return absl::InvalidArgumentError("rendezvous: empty prefix to erase");
  absl::MutexLock lock(&mu_);
  uint64_t n = 0;
  for (auto it = kv_.begin(); it != kv_.end();) {
    if (absl::StartsWith(it->first, prefix)) {
      kv_.erase(it++);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

uint64_t RendezvousStore::Erase(const std::vector<std::string>& keys) {
  absl::MutexLock lock(&mu_);
  uint64_t n = 0;
  for (const std::string& k : keys) n += kv_.erase(k);
  return n;
}

size_t RendezvousStore::size() const {
  absl::MutexLock lock(&mu_);
  return kv_.size();
}

void RendezvousStore::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
}

grpc::Status RendezvousService::CheckToken(grpc::ServerContext* ctx) const {
  const auto& md = ctx->client_metadata();
  auto it = md.find(kTokenMetadataKey);
  if (it == md.end() ||
      !ConstantTimeEquals(std::string_view(it->second.data(), it->second.size()), token_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "rendezvous: missing or wrong group token");
  }
  return grpc::Status::OK;
}

grpc::Status RendezvousService::Set(grpc::ServerContext* ctx, const v1::SetRequest* req,
                                    v1::SetResponse*) {
  if (grpc::Status s = CheckToken(ctx); !s.ok()) return s;
  return ToGrpcStatus(store_->Set(req->key(), req->value()));
}

grpc::Status RendezvousService::Get(grpc::ServerContext* ctx, const v1::GetRequest* req,
                                    v1::GetResponse* resp) {
  if (grpc::Status s = CheckToken(ctx); !s.ok()) return s;
  absl::StatusOr<std::string> v = store_->Get(req->key());
  if (!v.ok()) return ToGrpcStatus(v.status());
  resp->set_value(*std::move(v));
  return grpc::Status::OK;
}

grpc::Status RendezvousService::Wait(grpc::ServerContext* ctx, const v1::WaitRequest* req,
                                     v1::WaitResponse*) {
  if (grpc::Status s = CheckToken(ctx); !s.ok()) return s;
  absl::Time deadline = absl::Now() + std::min(absl::Milliseconds(req->timeout_ms()),
                                               kMaxServerWait);
  deadline = std::min(deadline, absl::FromChrono(ctx->deadline()));
  std::vector<std::string> keys(req->keys().begin(), req->keys().end());
  return ToGrpcStatus(store_->Wait(keys, deadline));
}

grpc::Status RendezvousService::ErasePrefix(grpc::ServerContext* ctx,
                                            const v1::ErasePrefixRequest* req,
                                            v1::ErasePrefixResponse* resp) {
  if (grpc::Status s = CheckToken(ctx); !s.ok()) return s;
  absl::StatusOr<uint64_t> n = store_->ErasePrefix(req->prefix());
  if (!n.ok()) return ToGrpcStatus(n.status());
  resp->set_erased(*n);
  return grpc::Status::OK;
}

grpc::Status RendezvousService::Erase(grpc::ServerContext* ctx, const v1::EraseRequest* req,
                                      v1::EraseResponse* resp) {
  if (grpc::Status s = CheckToken(ctx); !s.ok()) return s;
  resp->set_erased(store_->Erase({req->keys().begin(), req->keys().end()}));
  return grpc::Status::OK;
}

absl::StatusOr<std::unique_ptr<RendezvousServer>> RendezvousServer::Start(
    const std::string& host, uint32_t port, const std::string& token) {
  if (token.empty()) {
    // Without one, any process that reaches the port could write the
    // group's keys (and wedge it with one bad value).
    return absl::InvalidArgumentError("rendezvous: a group token is required");
  }
  std::unique_ptr<RendezvousServer> s(new RendezvousServer());
  s->service_ = std::make_unique<RendezvousService>(&s->store_, token);
  grpc::ServerBuilder builder;
  DisablePortSharing(builder);
  int bound = 0;
  const std::string address = absl::StrCat(host, ":", port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &bound);
  builder.RegisterService(s->service_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || bound == 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "rendezvous: cannot listen on ", address, " (in use, or not an address of this host)"));
  }
  s->port_ = static_cast<uint32_t>(bound);
  return s;
}

RendezvousServer::~RendezvousServer() { Shutdown(); }

void RendezvousServer::Shutdown() {
  store_.Shutdown();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
    server_.reset();
  }
}

namespace {

absl::Status Named(const std::string& address, const grpc::Status& s) {
  absl::Status a = FromGrpcStatus(s);
  if (a.ok()) return a;
  return absl::Status(a.code(), absl::StrCat("rendezvous ", address, ": ", a.message()));
}

// CANCELLED from the server is its shutdown (sender 0 stopping or aborted):
// the peer's planned stop, never this client's own, which is only ever
// CANCELLED when Cancel() was called. Callers see UNAVAILABLE and may wait
// for the server to come back.
absl::Status ServerStatus(const std::string& address, const grpc::Status& s,
                          bool own_cancel) {
  if (s.error_code() == grpc::StatusCode::CANCELLED && !own_cancel) {
    return absl::UnavailableError(absl::StrCat(
        "rendezvous ", address, ": its server is shutting down (sender 0 stopped or was "
        "aborted): ", s.error_message()));
  }
  return Named(address, s);
}

}  // namespace

RendezvousClient::RendezvousClient(const std::string& address, std::string token,
                                   const std::atomic<bool>* cancelled,
                                   absl::Duration call_timeout)
    : address_(address), token_(std::move(token)), call_timeout_(call_timeout),
      external_(cancelled) {
  grpc::ChannelArguments args;
  // Reconnect quickly when sender 0 comes up after us.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(static_cast<int>(kMaxRendezvousValueBytes + 4096));
  channel_ = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  stub_ = v1::Rendezvous::NewStub(channel_);
}

RendezvousClient::~RendezvousClient() = default;

void RendezvousClient::Cancel() { cancelled_ = true; }

absl::Time RendezvousClient::Bound(absl::Time deadline) const {
  return std::min(deadline, absl::Now() + call_timeout_);
}

absl::Status RendezvousClient::Call(absl::Time deadline,
                                    const std::function<grpc::Status(grpc::ClientContext&)>& rpc) {
  deadline = Bound(deadline);
  while (true) {
    if (Cancelled()) return absl::CancelledError("rendezvous client cancelled");
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);  // the server may not be up yet
    ctx.set_deadline(absl::ToChronoTime(std::min(deadline, absl::Now() + kClientSlice)));
    if (!token_.empty()) ctx.AddMetadata(kTokenMetadataKey, token_);
    grpc::Status s = rpc(ctx);
    if (s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return ServerStatus(address_, s, Cancelled());
    }
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(absl::StrCat("rendezvous ", address_, ": no answer"));
    }
  }
}

absl::Status RendezvousClient::Set(const std::string& key, const std::string& value,
                                   absl::Time deadline) {
  v1::SetRequest req;
  req.set_key(key);
  req.set_value(value);
  v1::SetResponse resp;
  return Call(deadline, [&](grpc::ClientContext& ctx) { return stub_->Set(&ctx, req, &resp); });
}

absl::StatusOr<std::string> RendezvousClient::Get(const std::string& key, absl::Time deadline) {
  v1::GetRequest req;
  req.set_key(key);
  v1::GetResponse resp;
  absl::Status s =
      Call(deadline, [&](grpc::ClientContext& ctx) { return stub_->Get(&ctx, req, &resp); });
  if (!s.ok()) return s;
  return resp.value();
}

absl::StatusOr<uint64_t> RendezvousClient::ErasePrefix(const std::string& prefix,
                                                       absl::Time deadline) {
  v1::ErasePrefixRequest req;
  req.set_prefix(prefix);
  v1::ErasePrefixResponse resp;
  absl::Status s = Call(
      deadline, [&](grpc::ClientContext& ctx) { return stub_->ErasePrefix(&ctx, req, &resp); });
  if (!s.ok()) return s;
  return resp.erased();
}

absl::StatusOr<uint64_t> RendezvousClient::Erase(const std::vector<std::string>& keys,
                                                 absl::Time deadline) {
  v1::EraseRequest req;
  for (const std::string& k : keys) req.add_keys(k);
  v1::EraseResponse resp;
  absl::Status s =
      Call(deadline, [&](grpc::ClientContext& ctx) { return stub_->Erase(&ctx, req, &resp); });
  if (!s.ok()) return s;
  return resp.erased();
}

absl::Status RendezvousClient::Wait(const std::vector<std::string>& keys, absl::Time deadline) {
  v1::WaitRequest req;
  for (const auto& k : keys) req.add_keys(k);
  while (true) {
    if (Cancelled()) return absl::CancelledError("rendezvous client cancelled");
    const absl::Time slice_end = std::min(deadline, absl::Now() + kClientSlice);
    req.set_timeout_ms(static_cast<uint64_t>(
        std::max<int64_t>(0, absl::ToInt64Milliseconds(slice_end - absl::Now()))));
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);
    // A little slack so the server's own deadline answers first.
    ctx.set_deadline(absl::ToChronoTime(slice_end + absl::Milliseconds(500)));
    if (!token_.empty()) ctx.AddMetadata(kTokenMetadataKey, token_);
    v1::WaitResponse resp;
    grpc::Status s = stub_->Wait(&ctx, req, &resp);
    if (s.ok()) return absl::OkStatus();
    if (s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return ServerStatus(address_, s, Cancelled());
    }
    if (absl::Now() >= deadline) {
      // The server names the missing keys when it answered; otherwise it
      // never answered.
      if (s.error_message().find("missing") != std::string::npos) return Named(address_, s);
      return absl::DeadlineExceededError(
          absl::StrCat("rendezvous ", address_, ": no answer before the deadline"));
    }
  }
}

}  // namespace weightcast
