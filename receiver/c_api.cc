#include "receiver/c_api.h"

#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "protocol/rendezvous_store.h"
#include "receiver/callback_sink.h"
#include "receiver/receiver.h"

struct wc_receiver {
  std::unique_ptr<weightcast::RendezvousKeyValueStore> store;
  std::unique_ptr<weightcast::Receiver> receiver;
};

namespace {

void SetError(char* err, size_t len, const std::string& message) {
  if (err == nullptr || len == 0) return;
  std::strncpy(err, message.c_str(), len - 1);
  err[len - 1] = '\0';
}

absl::Status FromRc(int rc, const char* what) {
  if (rc == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " callback returned ", rc));
}

}  // namespace

extern "C" {

wc_receiver* wc_receiver_create(const char* rendezvous, const char* token, int rank,
                                double timeout_s, const char* bind_host, char* err,
                                size_t err_len) {
  if (rendezvous == nullptr || timeout_s <= 0) {
    SetError(err, err_len, "rendezvous address and a positive timeout are required");
    return nullptr;
  }
  auto r = std::make_unique<wc_receiver>();
  const std::string tok = token == nullptr ? "" : token;
  const std::string bind = bind_host == nullptr || *bind_host == 0 ? "127.0.0.1" : bind_host;
  r->store = std::make_unique<weightcast::RendezvousKeyValueStore>(rendezvous, tok);
  weightcast::ReceiverOptions opts;
  opts.rank = rank;
  opts.op_timeout = absl::Seconds(timeout_s);
  auto receiver = weightcast::Receiver::Create(
      opts, r->store.get(), weightcast::MakeTransportFactory(
                                     {.rendezvous_address = rendezvous, .token = tok, .bind_host = bind}));
  if (!receiver.ok()) {
    SetError(err, err_len, receiver.status().ToString());
    return nullptr;
  }
  r->receiver = *std::move(receiver);
  return r.release();
}

int wc_receiver_next(wc_receiver* r, const wc_callbacks* cb, double wait_s, uint64_t* version,
                     char* err, size_t err_len) {
  if (r == nullptr || cb == nullptr || cb->tensor == nullptr) {
    SetError(err, err_len, "receiver and a tensor callback are required");
    return WC_ERROR;
  }
  weightcast::TensorCallbacks callbacks;
  callbacks.begin = [cb](uint64_t v, const weightcast::GlobalManifest& m) {
    if (cb->begin == nullptr) return absl::OkStatus();
    return FromRc(cb->begin(cb->user, v, m.tensors.size(), m.config_json.c_str()), "begin");
  };
  callbacks.tensor = [cb](const weightcast::ReceivedTensor& t) {
    const std::string dtype(weightcast::DTypeName(t.spec->dtype));
    wc_tensor ct{t.spec->name.c_str(), dtype.c_str(), static_cast<int32_t>(t.spec->shape.size()),
                 t.spec->shape.data(), t.data, t.bytes};
    return FromRc(cb->tensor(cb->user, &ct), absl::StrCat("tensor '", t.spec->name, "'").c_str());
  };
  callbacks.commit = [cb](uint64_t v) -> absl::StatusOr<std::string> {
    if (cb->commit != nullptr) {
      absl::Status s = FromRc(cb->commit(cb->user, v), "commit");
      if (!s.ok()) return s;
    }
    return absl::StrCat("version ", v);
  };
  callbacks.abort = [cb](uint64_t v) {
    if (cb->abort != nullptr) cb->abort(cb->user, v);
  };
  weightcast::CallbackSink sink(std::move(callbacks));
  auto result = r->receiver->ReceiveNext(sink, absl::Seconds(wait_s));
  if (!result.ok()) {
    SetError(err, err_len, result.status().ToString());
    return absl::IsCancelled(result.status()) ? WC_STOPPED : WC_ERROR;
  }
  if (!result->has_value()) return WC_NO_UPDATE;
  if (version != nullptr) *version = (*result)->weight_version;
  if (!(*result)->committed) {
    SetError(err, err_len, (*result)->reason);
    return WC_ABORTED;
  }
  return WC_COMMITTED;
}

void wc_receiver_stop(wc_receiver* r) {
  if (r != nullptr) r->receiver->Stop();
}

void wc_receiver_destroy(wc_receiver* r) { delete r; }

}  // extern "C"
