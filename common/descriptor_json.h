// The descriptor document weightcastctl registers tensors from (what the
// Python trainer helper writes): JSON
//   {"config": {...config.json...},            (optional)
//    "tensors": [{"name": "...", "dtype": "BF16", "shape": [2, 3],
//                 "shm": {"path": "/dev/shm/x", "offset": 0}}        or
//                 "cuda_ipc": {"ipc_handle": BASE64, "offset": 0,
//                              "device": 0, "allocation_bytes": N}}, ...]}
#ifndef WEIGHTCAST_COMMON_DESCRIPTOR_JSON_H_
#define WEIGHTCAST_COMMON_DESCRIPTOR_JSON_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "weightcast/v1/control.pb.h"

namespace weightcast {

// Fills `req` from `text`. INVALID_ARGUMENT naming `where` and the tensor's
// index for anything malformed, including JSON nested deeper than
// kMaxConfigJsonDepth (common/config_json.h).
[[nodiscard]] absl::Status ParseDescriptors(std::string_view text, const std::string& where,
                                            v1::RegisterTensorsRequest* req);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_DESCRIPTOR_JSON_H_
