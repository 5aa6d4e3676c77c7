// weightcastd --init-config: a text-format InitBroadcasterRequest, parsed,
// converted and validated as the daemon does before Init.
#include <cstddef>
#include <cstdint>
#include <string>

#include <google/protobuf/text_format.h>

#include "sender/broadcaster.h"
#include "sender/broadcaster_service.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  weightcast::v1::InitBroadcasterRequest req;
  google::protobuf::TextFormat::Parser parser;
  parser.AllowPartialMessage(false);
  if (!parser.ParseFromString(std::string(reinterpret_cast<const char*>(data), size), &req)) {
    return 0;
  }
  (void)weightcast::ValidateBroadcasterConfig(weightcast::ConfigFromProto(req));
  return 0;
}
