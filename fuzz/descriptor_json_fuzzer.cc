// weightcastctl's descriptor document (common/descriptor_json.h).
// Property: every tensor parsed has a location.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/descriptor_json.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  weightcast::v1::RegisterTensorsRequest req;
  absl::Status s = weightcast::ParseDescriptors(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz", &req);
  if (s.ok()) {
    for (const auto& t : req.tensors()) FUZZ_CHECK(t.location_case() != 0);
  }
  return 0;
}
