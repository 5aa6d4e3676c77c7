#include "transport/gloo_transport.h"

#include <gloo/common/error.h>
#include <gloo/context.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>

#include <algorithm>
#include <csignal>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace weightcast {
namespace {

std::chrono::milliseconds Remaining(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return std::chrono::milliseconds(std::max<int64_t>(ms, 1));
}

// gloo's rendezvous Store over our RendezvousClient, under a key prefix.
class StoreAdapter : public gloo::rendezvous::Store {
 public:
  StoreAdapter(RendezvousClient* client, std::string prefix, absl::Time deadline)
      : client_(client), prefix_(std::move(prefix)), deadline_(deadline) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    absl::Status s = client_->Set(prefix_ + key, std::string(data.begin(), data.end()), deadline_);
    if (!s.ok()) throw gloo::IoException(std::string(s.message()));
  }
  std::vector<char> get(const std::string& key) override {
    wait({key});
    absl::StatusOr<std::string> v = client_->Get(prefix_ + key, deadline_);
    if (!v.ok()) throw gloo::IoException(std::string(v.status().message()));
    return std::vector<char>(v->begin(), v->end());
  }
  void wait(const std::vector<std::string>& keys) override {
    wait(keys, std::chrono::milliseconds(0));
  }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds&) override {
    std::vector<std::string> full;
    for (const auto& k : keys) full.push_back(prefix_ + k);
    absl::Status s = client_->Wait(full, deadline_);
    if (!s.ok()) throw gloo::IoException(std::string(s.message()));
  }

 private:
  RendezvousClient* client_;
  std::string prefix_;
  absl::Time deadline_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GlooTransport>> GlooTransport::Connect(const GlooOptions& o) {
  // gloo writes to its sockets without MSG_NOSIGNAL: a peer that closed its
  // end (it died, or aborted) would kill this process with SIGPIPE instead of
  // failing the write with EPIPE. Ignore SIGPIPE, as network daemons do.
  static std::once_flag sigpipe_once;
  std::call_once(sigpipe_once, [] { std::signal(SIGPIPE, SIG_IGN); });
  if (o.rendezvous == nullptr || o.world_size < 2 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("gloo: rank ", o.rank, " of world ",
                                                   o.world_size, " (needs a rendezvous)"));
  }
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = o.bind_host;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(o.rank, o.world_size);
    ctx->setTimeout(Remaining(o.deadline));
    StoreAdapter store(o.rendezvous, o.key_prefix, o.deadline);
    ctx->connectFullMesh(store, device);
    return std::unique_ptr<GlooTransport>(new GlooTransport(ctx, o.rank, o.world_size));
  } catch (const std::exception& e) {
    // Say which ranks never published their address.
    std::vector<int> missing;
    // (gloo names a rank's address key "<rank>" or "rank_<rank>" depending
    // on the code path.)
    const absl::Time quick = absl::Now() + absl::Seconds(2);
    for (int r = 0; r < o.world_size; ++r) {
      if (!o.rendezvous->Get(absl::StrCat(o.key_prefix, r), quick).ok() &&
          !o.rendezvous->Get(absl::StrCat(o.key_prefix, "rank_", r), quick).ok()) {
        missing.push_back(r);
      }
    }
    const std::string who =
        missing.empty() ? "" : absl::StrCat(" (ranks not joined: ", absl::StrJoin(missing, ", "), ")");
    const std::string msg = absl::StrCat("gloo: rank ", o.rank, " connecting group ",
                                         o.key_prefix, ": ", e.what(), who);
    if (absl::Now() >= o.deadline) return absl::DeadlineExceededError(msg);
    return absl::UnavailableError(msg);
  }
}

GlooTransport::~GlooTransport() {
  try {
    if (context_) context_->closeConnections();
  } catch (...) {
  }
  context_.reset();  // pairs first, then the buffers they may point at
  graveyard_.clear();
}

absl::Status GlooTransport::Fail(absl::Status s) {
  healthy_ = false;
  if (aborted_) return absl::AbortedError(absl::StrCat("transport aborted: ", s.message()));
  return s;
}

absl::Status GlooTransport::Exchange(std::unique_ptr<gloo::transport::UnboundBuffer> buf,
                                     const std::vector<int>& to, int from, uint64_t slot,
                                     absl::Time deadline, const std::string& what) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_) return absl::AbortedError("transport aborted");
    active_ = buf.get();
  }
  absl::Status result;
  try {
    for (int r : to) buf->send(r, slot);
    if (from >= 0) buf->recv(from, slot);
    for (size_t i = 0; i < to.size() && result.ok(); ++i) {
      int peer = -1;
      if (!buf->waitSend(&peer, Remaining(deadline))) result = absl::AbortedError("aborted");
    }
    if (result.ok() && from >= 0 && !buf->waitRecv(nullptr, Remaining(deadline))) {
      result = absl::AbortedError("aborted");
    }
  } catch (const std::exception& e) {
    const std::string m = e.what();
    const bool timeout = m.find("imed out") != std::string::npos ||
                         m.find("imeout") != std::string::npos || absl::Now() >= deadline;
    result = timeout ? absl::DeadlineExceededError(absl::StrCat(what, ": timed out (", m, ")"))
                     : absl::UnavailableError(absl::StrCat(what, ": ", m));
  }
  if (result.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    active_ = nullptr;
    return absl::OkStatus();
  }
  // Close our pairs here, on the thread whose buffer may still be pending on
  // them (so nothing lands in the caller's memory after we return), and so
  // that peers blocked on us fail now rather than at their deadline. The
  // buffer object is kept until the context is gone.
  try {
    context_->closeConnections();
  } catch (...) {
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    active_ = nullptr;
    graveyard_.push_back(std::move(buf));
  }
  if (aborted_) return Fail(absl::AbortedError(absl::StrCat(what, ": aborted")));
  return Fail(result);
}

absl::Status GlooTransport::Broadcast(void* data, size_t bytes, int root, absl::Time deadline) {
  if (!healthy()) return aborted_ ? absl::AbortedError("transport aborted")
                                  : absl::FailedPreconditionError("transport is broken");
  if (root < 0 || root >= world_size_) {
    return absl::InvalidArgumentError(absl::StrCat("broadcast root ", root, " out of range"));
  }
  const uint64_t slot = next_slot_++;
  if (bytes == 0) return absl::OkStatus();
  if (data == nullptr) return absl::InvalidArgumentError("broadcast of a null buffer");
  auto buf = context_->createUnboundBuffer(data, bytes);
  std::vector<int> to;
  if (rank_ == root) {
    for (int r = 0; r < world_size_; ++r) {
      if (r != root) to.push_back(r);
    }
  }
  return Exchange(std::move(buf), to, rank_ == root ? -1 : root, slot, deadline,
                  absl::StrCat("broadcast of ", bytes, " bytes from rank ", root, " (at rank ",
                               rank_, ")"));
}

absl::Status GlooTransport::BroadcastToRanks(void* data, size_t bytes, int root,
                                             int first_receiver, uint64_t tag,
                                             absl::Time deadline) {
  if (!healthy()) return aborted_ ? absl::AbortedError("transport aborted")
                                  : absl::FailedPreconditionError("transport is broken");
  if (root < 0 || root >= world_size_ || first_receiver <= root ||
      first_receiver > world_size_ || (rank_ != root && rank_ < first_receiver)) {
    return absl::InvalidArgumentError(absl::StrCat("partial broadcast from rank ", root,
                                                   " to ranks >= ", first_receiver,
                                                   " called on rank ", rank_));
  }
  if (bytes == 0) return absl::OkStatus();
  if (data == nullptr) return absl::InvalidArgumentError("broadcast of a null buffer");
  // Tagged slots live apart from the collective counter (high bit set), so
  // ranks that skip a partial broadcast stay in step for everything else.
  const uint64_t slot = (uint64_t{1} << 63) | tag;
  auto buf = context_->createUnboundBuffer(data, bytes);
  std::vector<int> to;
  if (rank_ == root) {
    for (int r = first_receiver; r < world_size_; ++r) to.push_back(r);
  }
  return Exchange(std::move(buf), to, rank_ == root ? -1 : root, slot, deadline,
                  absl::StrCat("broadcast of ", bytes, " bytes from rank ", root, " (at rank ",
                               rank_, ")"));
}

absl::StatusOr<int64_t> GlooTransport::AllReduceMin(int64_t value, absl::Time deadline) {
  if (!healthy()) return aborted_ ? absl::AbortedError("transport aborted")
                                  : absl::FailedPreconditionError("transport is broken");
  // Gather at rank 0, then rank 0 broadcasts the minimum.
  const uint64_t slot = next_slot_++;
  const std::string what = absl::StrCat("vote (at rank ", rank_, ")");
  if (rank_ == 0) {
    std::vector<int64_t> all(world_size_, value);
    for (int r = 1; r < world_size_; ++r) {
      absl::Status s = Exchange(context_->createUnboundBuffer(&all[r], sizeof(int64_t)), {}, r,
                                slot, deadline, absl::StrCat(what, " from rank ", r));
      if (!s.ok()) return s;
    }
    value = *std::min_element(all.begin(), all.end());
  } else {
    absl::Status s = Exchange(context_->createUnboundBuffer(&value, sizeof(int64_t)), {0}, -1,
                              slot, deadline, what);
    if (!s.ok()) return s;
  }
  absl::Status s = Broadcast(&value, sizeof(value), 0, deadline);
  if (!s.ok()) return s;
  return value;
}

void GlooTransport::Abort() {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_.exchange(true)) return;
  if (active_ != nullptr) {
    // Wake the operation in progress; its own thread then closes the pairs
    // (closing them under a pending buffer from here would race with it).
    active_->abortWaitRecv();
    active_->abortWaitSend();
    return;
  }
  // Nothing in flight (and nothing can start: aborted_ is set under mu_).
  try {
    context_->closeConnections();
  } catch (...) {
  }
}

}  // namespace weightcast
