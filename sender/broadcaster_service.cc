#include "sender/broadcaster_service.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "access/peer.h"
#include "common/status_macros.h"

namespace weightcast {
namespace {

void SetReceivers(const std::vector<RankVersion>& from,
                  google::protobuf::RepeatedPtrField<v1::RankVersion>* to) {
  for (const RankVersion& r : from) {
    v1::RankVersion* v = to->Add();
    v->set_rank(r.rank);
    v->set_version(r.version);
    v->set_error(r.error);
  }
}

}  // namespace

// Every handler starts here: who is calling, or the refusal.
#define WC_AUTHORIZE(ctx, who)                                                   \
  absl::StatusOr<std::optional<PeerCredentials>> who = auth_->Authorize(*(ctx)); \
  if (!who.ok()) return ToGrpcStatus(who.status())

BroadcasterConfig ConfigFromProto(const v1::InitBroadcasterRequest& req) {
  BroadcasterConfig c;
  c.host = req.host();
  c.port = req.port();
  c.sender_rank = req.sender_rank();
  c.num_senders = req.num_senders();
  c.rank_offset = req.rank_offset();
  c.inference_world_size = req.inference_world_size();
  c.timeout_s = req.timeout_s();
  c.transport = req.transport();
  c.format.family = req.format().family();
  c.format.source_layout = req.format().source_layout();
  c.format.target = req.format().target();
  c.format.quant_method = req.format().quantization().method();
  c.format.scale_rule = req.format().quantization().scale_rule();
  c.format.power_of_two_scales = req.format().quantization().power_of_two_scales();
  c.bucket_bytes = req.bucket_bytes();
  c.token = req.token();
  c.data_host = req.data_host();
  c.cuda_device = req.cuda_device();
  c.allow_non_finite = req.allow_non_finite();
  return c;
}

absl::StatusOr<TensorRegistration> RegistrationFromProto(const v1::TensorDescriptor& d) {
  TensorRegistration r;
  r.spec.name = d.name();
  absl::StatusOr<DType> dtype = ParseDType(d.dtype());
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", d.name(), "': unknown dtype '", d.dtype(), "'"));
  }
  r.spec.dtype = *dtype;
  r.spec.shape.assign(d.shape().begin(), d.shape().end());
  switch (d.location_case()) {
    case v1::TensorDescriptor::kShm:
      r.location = ShmLocation{.path = d.shm().path(), .offset = d.shm().offset()};
      break;
    case v1::TensorDescriptor::kCudaIpc:
      if (d.cuda_ipc().ipc_handle().size() != 64) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", d.name(), "': cuda_ipc.ipc_handle must be 64 bytes, got ",
            d.cuda_ipc().ipc_handle().size()));
      }
      r.location = CudaIpcLocation{.ipc_handle = d.cuda_ipc().ipc_handle(),
                                   .offset = d.cuda_ipc().offset(),
                                   .device = d.cuda_ipc().device(),
                                   .allocation_bytes = d.cuda_ipc().allocation_bytes()};
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", d.name(), "': no location (shm or cuda_ipc)"));
  }
  return r;
}

grpc::Status BroadcasterService::InitBroadcaster(grpc::ServerContext* ctx,
                                                 const v1::InitBroadcasterRequest* req,
                                                 v1::InitBroadcasterResponse* resp) {
  WC_AUTHORIZE(ctx, caller);
  absl::StatusOr<std::pair<uint32_t, uint32_t>> r = core_->Init(ConfigFromProto(*req));
  if (!r.ok()) return ToGrpcStatus(r.status());
  resp->set_rank(r->first);
  resp->set_world_size(r->second);
  return grpc::Status::OK;
}

grpc::Status BroadcasterService::RegisterTensors(grpc::ServerContext* ctx,
                                                 const v1::RegisterTensorsRequest* req,
                                                 v1::RegisterTensorsResponse* resp) {
  WC_AUTHORIZE(ctx, caller);
  // A local peer gets only what it may read itself; a token holder acts as
  // the daemon's own user.
  ReadCheck may_read;
  if (caller->has_value()) {
    may_read = [peer = **caller](const std::string& path, uint64_t device, uint64_t inode) {
      return CheckPeerMayRead(peer, path, device, inode);
    };
  }
  std::vector<TensorRegistration> regs;
  regs.reserve(req->tensors_size());
  for (const v1::TensorDescriptor& d : req->tensors()) {
    absl::StatusOr<TensorRegistration> r = RegistrationFromProto(d);
    if (!r.ok()) return ToGrpcStatus(r.status());
    regs.push_back(*std::move(r));
  }
  absl::Status s = core_->Register(regs, req->checkpoint_dir(), req->replace(), req->config_json(),
                                   may_read);
  if (!s.ok()) return ToGrpcStatus(s);
  auto [count, bytes] = core_->RegisteredCount();
  resp->set_registered(count);
  resp->set_total_bytes(bytes);
  return grpc::Status::OK;
}

grpc::Status BroadcasterService::Update(grpc::ServerContext* ctx, const v1::UpdateRequest* req,
                                        grpc::ServerWriter<v1::UpdateEvent>* writer) {
  WC_AUTHORIZE(ctx, caller);
  // A client that goes away does not cancel the update (the group would be
  // left half-way); it only stops receiving events. Abort cancels.
  bool client_gone = false;
  bool ended = false;  // a Committed or Failed event was produced
  auto emit = [&](const UpdateEvent& event) {
    ended = ended || std::holds_alternative<CommittedEvent>(event) ||
            std::holds_alternative<FailedEvent>(event);
    if (client_gone || std::holds_alternative<JoinedEvent>(event)) return;
    v1::UpdateEvent out;
    if (const auto* e = std::get_if<PlannedEvent>(&event)) {
      auto* p = out.mutable_planned();
      p->set_num_buckets(e->num_buckets);
      p->set_own_buckets(e->own_buckets);
      p->set_total_bytes(e->total_bytes);
      p->set_num_tensors(e->num_tensors);
    } else if (const auto* e = std::get_if<BucketSentEvent>(&event)) {
      auto* b = out.mutable_bucket();
      b->set_index(e->index);
      b->set_num_buckets(e->num_buckets);
      b->set_bytes(e->bytes);
      b->set_root(e->root);
    } else if (std::holds_alternative<SourceReleasedEvent>(event)) {
      out.mutable_source_released();
    } else if (const auto* e = std::get_if<CommittedEvent>(&event)) {
      auto* c = out.mutable_committed();
      c->set_version(e->version);
      c->set_bytes(e->bytes);
      c->set_seconds(e->seconds);
      SetReceivers(e->receivers, c->mutable_receivers());
    } else if (const auto* e = std::get_if<FailedEvent>(&event)) {
      auto* f = out.mutable_failed();
      f->set_version(e->version);
      f->set_code(static_cast<int32_t>(e->status.code()));
      f->set_message(std::string(e->status.message()));
      SetReceivers(e->receivers, f->mutable_receivers());
    }
    if (ctx->IsCancelled() || !writer->Write(out)) client_gone = true;
  };
  absl::Status s = core_->Update(req->version(), emit, req->new_model());
  // An update that started reports its outcome in the stream (Committed or
  // Failed) and the RPC ends OK; one refused before it started (wrong state,
  // version not increasing) ends with that status and no events.
  return ended ? grpc::Status::OK : ToGrpcStatus(s);
}

grpc::Status BroadcasterService::GetStatus(grpc::ServerContext* ctx,
                                           const v1::GetStatusRequest*,
                                           v1::GetStatusResponse* resp) {
  WC_AUTHORIZE(ctx, caller);
  BroadcasterStatus s = core_->GetStatus();
  resp->set_state(s.state);
  resp->set_last_committed_version(s.last_committed_version);
  resp->set_last_error(s.last_error);
  resp->set_updates_committed(s.updates_committed);
  resp->set_updates_failed(s.updates_failed);
  resp->set_bytes_sent(s.bytes_sent);
  resp->set_registered_tensors(s.registered_tensors);
  resp->set_rank(s.rank);
  resp->set_world_size(s.world_size);
  resp->set_generation(s.generation);
  SetReceivers(s.receivers, resp->mutable_receivers());
  resp->set_device_memory_bytes(s.device_memory_bytes);
  resp->set_device_memory_peak_bytes(s.device_memory_peak_bytes);
  resp->set_pinned_memory_peak_bytes(s.pinned_memory_peak_bytes);
  return grpc::Status::OK;
}

grpc::Status BroadcasterService::Abort(grpc::ServerContext* ctx, const v1::AbortRequest*,
                                       v1::AbortResponse* resp) {
  WC_AUTHORIZE(ctx, caller);
  resp->set_aborted_update(core_->Abort());
  return grpc::Status::OK;
}

}  // namespace weightcast
