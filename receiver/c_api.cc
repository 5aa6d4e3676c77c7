#include "receiver/c_api.h"

#include <cstring>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda_ipc.h"
#include "protocol/rendezvous_store.h"
#include "receiver/callback_sink.h"
#include "receiver/parameter_sink.h"
#include "receiver/receiver.h"

struct wc_receiver {
  std::unique_ptr<weightcast::RendezvousKeyValueStore> store;
  std::unique_ptr<weightcast::Receiver> receiver;
  int cuda_device = 0;
  bool device_tensors = false;
};

struct wc_targets {
  int device = 0;  // -1: host memory
  weightcast::ParameterSink::Mode mode = weightcast::ParameterSink::Mode::kStaged;
  absl::flat_hash_map<std::string, weightcast::ParameterTarget> targets;
  weightcast::LayoutBuilder layout;  // none: the wire's tensors
  std::unique_ptr<weightcast::IpcAllocationCache> ipc;  // made at the first IPC target
  // Made from `targets` at the first update after they changed; kept across
  // versions so its stream is made once.
  std::unique_ptr<weightcast::ParameterSink> sink;
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

// The engine's begin / commit / abort around the sink that takes the
// tensors (a CallbackSink, or a ParameterSink writing them itself): begin
// before the first byte, commit after the sink published, abort exactly once
// for a version that was begun and not committed.
class BracketedSink final : public weightcast::Sink {
 public:
  BracketedSink(weightcast::Sink& inner, const wc_callbacks* cb) : inner_(inner), cb_(cb) {}

  bool TakesDeviceMemory() const override { return inner_.TakesDeviceMemory(); }
  void SetWriteDevice(int device) override { inner_.SetWriteDevice(device); }
  absl::Status Begin(const weightcast::GlobalManifest& m) override {
    version_ = m.weight_version;
    if (cb_ != nullptr && cb_->begin != nullptr) {
      absl::Status s = FromRc(cb_->begin(cb_->user, version_, m.tensors.size(),
                                         m.config_json.c_str()),
                              "begin");
      if (!s.ok()) return s;
    }
    open_ = true;
    absl::Status s = inner_.Begin(m);
    if (!s.ok()) Abort();
    return s;
  }
  absl::Status Write(uint32_t tensor, uint64_t offset, const std::byte* data,
                     uint64_t bytes) override {
    return inner_.Write(tensor, offset, data, bytes);
  }
  absl::Status EndBucket() override { return inner_.EndBucket(); }
  absl::Status Prepare() override { return inner_.Prepare(); }
  absl::StatusOr<std::string> Commit() override {
    absl::StatusOr<std::string> where = inner_.Commit();
    if (!where.ok()) return where;
    if (cb_ != nullptr && cb_->commit != nullptr) {
      absl::Status s = FromRc(cb_->commit(cb_->user, version_), "commit");
      if (!s.ok()) return s;
    }
    open_ = false;
    return where;
  }
  void Abort() override {
    inner_.Abort();
    if (!open_) return;
    open_ = false;
    if (cb_ != nullptr && cb_->abort != nullptr) cb_->abort(cb_->user, version_);
  }

 private:
  weightcast::Sink& inner_;
  const wc_callbacks* cb_;
  uint64_t version_ = 0;
  bool open_ = false;
};

// One update into `sink`, as wc_receiver_next reports it.
int RunNext(wc_receiver* r, weightcast::Sink& sink, double wait_s, uint64_t* version, char* err,
            size_t err_len) {
  if (!(wait_s >= 0)) {
    SetError(err, err_len, "wait_s must be >= 0");
    return WC_ERROR;
  }
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

int Fail(char* err, size_t err_len, const std::string& message) {
  SetError(err, err_len, message);
  return -1;
}

}  // namespace

extern "C" {

int wc_receiver_api_version(void) { return WC_RECEIVER_API_VERSION; }

void wc_receiver_options_init(wc_receiver_options* o) {
  if (o == nullptr) return;
  *o = wc_receiver_options{};
  o->rank = -1;
  o->timeout_s = 120.0;
  o->cuda_device = 0;
}

wc_receiver* wc_receiver_open(const wc_receiver_options* o, char* err, size_t err_len) {
  if (o == nullptr || o->rendezvous == nullptr || *o->rendezvous == 0 || !(o->timeout_s > 0)) {
    SetError(err, err_len, "rendezvous address and a positive timeout are required");
    return nullptr;
  }
  if (o->cuda_device < 0) {
    SetError(err, err_len, absl::StrCat("cuda_device ", o->cuda_device, " is negative"));
    return nullptr;
  }
  if (o->token == nullptr || *o->token == 0) {
    SetError(err, err_len, "a group token is required");
    return nullptr;
  }
  auto r = std::make_unique<wc_receiver>();
  const std::string tok = o->token;
  const std::string bind =
      o->bind_host == nullptr || *o->bind_host == 0 ? "127.0.0.1" : o->bind_host;
  r->store = std::make_unique<weightcast::RendezvousKeyValueStore>(
      o->rendezvous, tok, absl::Seconds(o->timeout_s));
  r->cuda_device = o->cuda_device;
  r->device_tensors = o->device_tensors != 0;
  weightcast::ReceiverOptions opts;
  opts.rank = o->rank;
  opts.cuda_device = o->cuda_device;
  opts.op_timeout = absl::Seconds(o->timeout_s);
  auto receiver = weightcast::Receiver::Create(
      opts, r->store.get(),
      weightcast::MakeTransportFactory(
          {.rendezvous_address = o->rendezvous, .token = tok, .bind_host = bind}));
  if (!receiver.ok()) {
    SetError(err, err_len, receiver.status().ToString());
    return nullptr;
  }
  r->receiver = *std::move(receiver);
  return r.release();
}

wc_receiver* wc_receiver_create(const char* rendezvous, const char* token, int rank,
                                double timeout_s, const char* bind_host, char* err,
                                size_t err_len) {
  wc_receiver_options o;
  wc_receiver_options_init(&o);
  o.rendezvous = rendezvous;
  o.token = token;
  o.rank = rank;
  o.timeout_s = timeout_s;
  o.bind_host = bind_host;
  return wc_receiver_open(&o, err, err_len);
}

int wc_receiver_next(wc_receiver* r, const wc_callbacks* cb, double wait_s, uint64_t* version,
                     char* err, size_t err_len) {
  if (r == nullptr || cb == nullptr || cb->tensor == nullptr) {
    SetError(err, err_len, "receiver and a tensor callback are required");
    return WC_ERROR;
  }
  weightcast::TensorCallbacks callbacks;
  callbacks.tensor = [cb](const weightcast::ReceivedTensor& t) {
    const std::string dtype(weightcast::DTypeName(t.spec->dtype));
    wc_tensor ct{t.spec->name.c_str(), dtype.c_str(), static_cast<int32_t>(t.spec->shape.size()),
                 t.spec->shape.data(), t.data, t.bytes, t.device};
    return FromRc(cb->tensor(cb->user, &ct), absl::StrCat("tensor '", t.spec->name, "'").c_str());
  };
  // begin / commit / abort: the same bracket as wc_receiver_next_into.
  weightcast::CallbackSink tensors(std::move(callbacks), r->device_tensors);
  BracketedSink sink(tensors, cb);
  return RunNext(r, sink, wait_s, version, err, err_len);
}

wc_targets* wc_targets_create(int cuda_device, int mode, char* err, size_t err_len) {
  if (cuda_device < -1) {
    SetError(err, err_len, absl::StrCat("cuda_device ", cuda_device,
                                        ": a device ordinal, or -1 for host memory"));
    return nullptr;
  }
  if (mode != WC_TARGETS_STAGED && mode != WC_TARGETS_IN_PLACE) {
    SetError(err, err_len,
             absl::StrCat("mode ", mode, ": expected WC_TARGETS_STAGED (0) or WC_TARGETS_IN_PLACE (1)"));
    return nullptr;
  }
  auto t = std::make_unique<wc_targets>();
  t->device = cuda_device;
  t->mode = mode == WC_TARGETS_STAGED ? weightcast::ParameterSink::Mode::kStaged
                                      : weightcast::ParameterSink::Mode::kInPlace;
  return t.release();
}

int wc_targets_add(wc_targets* t, const char* name, void* data, uint64_t nbytes, char* err,
                   size_t err_len) {
  if (t == nullptr || name == nullptr || *name == 0) {
    return Fail(err, err_len, "targets and a tensor name are required");
  }
  if (data == nullptr && nbytes != 0) {
    return Fail(err, err_len, absl::StrCat("tensor '", name, "': null pointer for ", nbytes,
                                           " bytes"));
  }
  if (t->ipc != nullptr) t->ipc->Release(name);  // it was an IPC target before
  t->targets[name] = weightcast::ParameterTarget{data, nbytes};
  t->sink.reset();
  return 0;
}

int wc_targets_add_ipc(wc_targets* t, const char* name, const void* handle, size_t handle_len,
                       uint64_t allocation_bytes, uint64_t offset, uint64_t nbytes, char* err,
                       size_t err_len) {
  if (t == nullptr || name == nullptr || *name == 0 || handle == nullptr) {
    return Fail(err, err_len, "targets, a tensor name and an IPC handle are required");
  }
  if (t->device < 0) {
    return Fail(err, err_len, absl::StrCat("tensor '", name,
                                           "': CUDA IPC targets need targets on a GPU"));
  }
  if (t->ipc == nullptr) t->ipc = std::make_unique<weightcast::IpcAllocationCache>(t->device);
  absl::StatusOr<void*> p = t->ipc->Resolve(
      name, absl::string_view(static_cast<const char*>(handle), handle_len), allocation_bytes,
      offset, nbytes);
  if (!p.ok()) return Fail(err, err_len, p.status().ToString());
  t->targets[name] = weightcast::ParameterTarget{*p, nbytes};
  t->sink.reset();
  return 0;
}

int wc_targets_set_vllm_layout(wc_targets* t, const char* family, int tp_rank, int tp_size,
                               int ep_rank, int ep_size, char* err, size_t err_len) {
  if (t == nullptr) return Fail(err, err_len, "targets are required");
  if (tp_size < 1 || ep_size < 1 || tp_rank < 0 || tp_rank >= tp_size || ep_rank < 0 ||
      ep_rank >= ep_size) {
    return Fail(err, err_len, absl::StrCat("vllm layout: tp rank ", tp_rank, " of ", tp_size,
                                           ", ep rank ", ep_rank, " of ", ep_size));
  }
  t->layout = weightcast::VllmLayoutBuilder(
      family == nullptr ? "" : family,
      weightcast::VllmRank{.tp_rank = tp_rank, .tp_size = tp_size, .ep_rank = ep_rank,
                           .ep_size = ep_size});
  t->sink.reset();
  return 0;
}

uint64_t wc_targets_count(const wc_targets* t) { return t == nullptr ? 0 : t->targets.size(); }

void wc_targets_destroy(wc_targets* t) { delete t; }

int wc_receiver_next_into(wc_receiver* r, wc_targets* t, const wc_callbacks* bracket,
                          double wait_s, uint64_t* version, int* dirty, char* err,
                          size_t err_len) {
  if (dirty != nullptr) *dirty = 0;
  if (r == nullptr || t == nullptr) {
    SetError(err, err_len, "receiver and targets are required");
    return WC_ERROR;
  }
  if (t->device >= 0 && t->device != r->cuda_device) {
    SetError(err, err_len, absl::StrCat("the targets are on device ", t->device,
                                        ", the receiver's buffers on device ", r->cuda_device));
    return WC_ERROR;
  }
  if (t->sink == nullptr) {
    t->sink = t->device < 0 ? std::make_unique<weightcast::ParameterSink>(
                                  weightcast::NewHostParameterCopier(), t->targets, t->mode,
                                  t->layout)
                            : std::make_unique<weightcast::ParameterSink>(
                                  t->device, t->targets, t->mode, t->layout);
  }
  BracketedSink sink(*t->sink, bracket);
  const int rc = RunNext(r, sink, wait_s, version, err, err_len);
  if (dirty != nullptr && rc != WC_COMMITTED && rc != WC_NO_UPDATE) *dirty = t->sink->dirty();
  return rc;
}

void wc_receiver_stop(wc_receiver* r) {
  if (r != nullptr) r->receiver->Stop();
}

void wc_receiver_destroy(wc_receiver* r) { delete r; }

}  // extern "C"
