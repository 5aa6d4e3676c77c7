// BroadcasterService: the gRPC adapter over Broadcaster. Asks ControlAuth
// who is calling and converts messages, nothing else: every decision is
// the core's.
#ifndef WEIGHTCAST_SENDER_BROADCASTER_SERVICE_H_
#define WEIGHTCAST_SENDER_BROADCASTER_SERVICE_H_

#include "access/control_auth.h"
#include "sender/broadcaster.h"
#include "weightcast/v1/control.grpc.pb.h"

namespace weightcast {

class BroadcasterService final : public v1::Broadcaster::Service {
 public:
  // Both outlive the service.
  BroadcasterService(Broadcaster* core, const ControlAuth* auth) : core_(core), auth_(auth) {}

  grpc::Status InitBroadcaster(grpc::ServerContext* ctx, const v1::InitBroadcasterRequest* req,
                               v1::InitBroadcasterResponse* resp) override;
  grpc::Status RegisterTensors(grpc::ServerContext* ctx, const v1::RegisterTensorsRequest* req,
                               v1::RegisterTensorsResponse* resp) override;
  grpc::Status Update(grpc::ServerContext* ctx, const v1::UpdateRequest* req,
                      grpc::ServerWriter<v1::UpdateEvent>* writer) override;
  grpc::Status GetStatus(grpc::ServerContext* ctx, const v1::GetStatusRequest* req,
                         v1::GetStatusResponse* resp) override;
  grpc::Status Abort(grpc::ServerContext* ctx, const v1::AbortRequest* req,
                     v1::AbortResponse* resp) override;

 private:
  Broadcaster* core_;
  const ControlAuth* auth_;
};

// Conversions, exposed for tests. INVALID_ARGUMENT naming the tensor.
[[nodiscard]] BroadcasterConfig ConfigFromProto(const v1::InitBroadcasterRequest& req);
[[nodiscard]] absl::StatusOr<TensorRegistration> RegistrationFromProto(
    const v1::TensorDescriptor& d);

}  // namespace weightcast

#endif  // WEIGHTCAST_SENDER_BROADCASTER_SERVICE_H_
