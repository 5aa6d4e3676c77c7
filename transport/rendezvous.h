// The group rendezvous: a small key-value store that sender rank 0 serves
// over gRPC (weightcast.v1.Rendezvous), so receivers and the other senders
// need only its address. Set / Get / Wait with deadlines; the group token
// (required) must come with every call (metadata x-weightcast-token).
//
//   auto server = RendezvousServer::Start("127.0.0.1", 29501, token);
//   RendezvousClient client("127.0.0.1:29501", token);
//   client.Set("k", "v"); client.Wait({"k"}, absl::Now() + absl::Seconds(5));
//
// Threading: everything here is thread-safe.
#ifndef WEIGHTCAST_TRANSPORT_RENDEZVOUS_H_
#define WEIGHTCAST_TRANSPORT_RENDEZVOUS_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "weightcast/v1/rendezvous.grpc.pb.h"

namespace grpc {
class Server;
class Channel;
class ClientContext;
class Status;
}  // namespace grpc

namespace weightcast {

inline constexpr size_t kMaxRendezvousKeyBytes = 512;
inline constexpr size_t kMaxRendezvousValueBytes = 16 << 20;
inline constexpr size_t kMaxRendezvousKeys = 100000;
inline constexpr char kTokenMetadataKey[] = "x-weightcast-token";

// The store itself, no network.
class RendezvousStore {
 public:
  // INVALID_ARGUMENT for an empty/oversized key or value,
  // RESOURCE_EXHAUSTED beyond kMaxRendezvousKeys.
  [[nodiscard]] absl::Status Set(const std::string& key, std::string value);
  // NOT_FOUND when absent.
  [[nodiscard]] absl::StatusOr<std::string> Get(const std::string& key) const;
  // Until every key exists (OK), the deadline (DEADLINE_EXCEEDED naming the
  // missing keys) or Shutdown (CANCELLED).
  [[nodiscard]] absl::Status Wait(const std::vector<std::string>& keys, absl::Time deadline) const;
  // Removes every key starting with `prefix` (non-empty); returns how many.
  [[nodiscard]] absl::StatusOr<uint64_t> ErasePrefix(const std::string& prefix);
  // Removes exactly `keys`; returns how many existed.
  uint64_t Erase(const std::vector<std::string>& keys);
  [[nodiscard]] size_t size() const;
  void Shutdown();

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::string> kv_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

// The gRPC adapter over a RendezvousStore.
class RendezvousService final : public v1::Rendezvous::Service {
 public:
  RendezvousService(RendezvousStore* store, std::string token)
      : store_(store), token_(std::move(token)) {}
  grpc::Status Set(grpc::ServerContext* ctx, const v1::SetRequest* req,
                   v1::SetResponse* resp) override;
  grpc::Status Get(grpc::ServerContext* ctx, const v1::GetRequest* req,
                   v1::GetResponse* resp) override;
  grpc::Status Wait(grpc::ServerContext* ctx, const v1::WaitRequest* req,
                    v1::WaitResponse* resp) override;
  grpc::Status ErasePrefix(grpc::ServerContext* ctx, const v1::ErasePrefixRequest* req,
                           v1::ErasePrefixResponse* resp) override;
  grpc::Status Erase(grpc::ServerContext* ctx, const v1::EraseRequest* req,
                     v1::EraseResponse* resp) override;

 private:
  grpc::Status CheckToken(grpc::ServerContext* ctx) const;
  RendezvousStore* store_;
  std::string token_;
};

class RendezvousServer {
 public:
  // Listens on host:port (port 0: any free port), never sharing it with
  // another server. ALREADY_EXISTS if it cannot.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RendezvousServer>> Start(
      const std::string& host, uint32_t port, const std::string& token);
  ~RendezvousServer();
  [[nodiscard]] uint32_t bound_port() const { return port_; }
  // Ends pending Waits and stops the server. Idempotent.
  void Shutdown();
  [[nodiscard]] RendezvousStore& store() { return store_; }

 private:
  RendezvousServer() = default;
  RendezvousStore store_;
  std::unique_ptr<RendezvousService> service_;
  std::unique_ptr<grpc::Server> server_;
  uint32_t port_ = 0;
};

class RendezvousClient {
 public:
  // `cancelled`, if given, works like Cancel() when it becomes true (so an
  // owner can cancel clients it does not hold); it must outlive the client.
  // `call_timeout` bounds every call given no deadline of its own (the
  // group's timeout_s, so no call outlasts it).
  RendezvousClient(const std::string& address, std::string token,
                   const std::atomic<bool>* cancelled = nullptr,
                   absl::Duration call_timeout = kDefaultCallTimeout);
  ~RendezvousClient();

  // Every call is bounded: `deadline` where given, else call_timeout.
  // Connection problems: UNAVAILABLE naming the address. Set and Get retry
  // while the server is not up yet, until their deadline.
  [[nodiscard]] absl::Status Set(const std::string& key, const std::string& value,
                                 absl::Time deadline = absl::InfiniteFuture());
  [[nodiscard]] absl::StatusOr<std::string> Get(const std::string& key,
                                                absl::Time deadline = absl::InfiniteFuture());
  // Until every key exists or the deadline; an empty key list checks that
  // the server answers.
  [[nodiscard]] absl::Status Wait(const std::vector<std::string>& keys, absl::Time deadline);
  [[nodiscard]] absl::StatusOr<uint64_t> ErasePrefix(const std::string& prefix,
                                                     absl::Time deadline = absl::InfiniteFuture());
  [[nodiscard]] absl::StatusOr<uint64_t> Erase(const std::vector<std::string>& keys,
                                               absl::Time deadline = absl::InfiniteFuture());
  // Makes pending and later calls return CANCELLED promptly. (The
  // server's own shutdown reaches callers as UNAVAILABLE, never CANCELLED.)
  void Cancel();

  [[nodiscard]] const std::string& address() const { return address_; }

  static constexpr absl::Duration kDefaultCallTimeout = absl::Seconds(30);

 private:
  absl::Time Bound(absl::Time deadline) const;
  // Runs a unary RPC in short slices until it answers, the deadline, or
  // Cancel; a server never reached is UNAVAILABLE naming the address.
  absl::Status Call(absl::Time deadline,
                    const std::function<grpc::Status(grpc::ClientContext&)>& rpc);
  std::string address_;
  std::string token_;
  absl::Duration call_timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Rendezvous::Stub> stub_;
  bool Cancelled() const { return cancelled_ || (external_ != nullptr && *external_); }
  std::atomic<bool> cancelled_{false};
  const std::atomic<bool>* external_ = nullptr;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_TRANSPORT_RENDEZVOUS_H_
