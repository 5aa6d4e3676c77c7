// The one mapping between absl::Status and grpc::Status, both ways.
#ifndef WEIGHTCAST_COMMON_GRPC_STATUS_H_
#define WEIGHTCAST_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace weightcast {

// Same code (the canonical codes are shared), same message.
[[nodiscard]] grpc::Status ToGrpcStatus(const absl::Status& status);
[[nodiscard]] absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_GRPC_STATUS_H_
