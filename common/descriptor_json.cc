#include "common/descriptor_json.h"

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/config_json.h"

namespace weightcast {

absl::Status ParseDescriptors(std::string_view text, const std::string& where,
                              v1::RegisterTensorsRequest* req) {
  // nlohmann's dump and destructor recurse: bound the nesting first.
  if (const int depth = JsonNestingDepth(text); depth > kMaxConfigJsonDepth) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": nested ", depth,
                                                   " levels deep, more than the ",
                                                   kMaxConfigJsonDepth, " allowed"));
  }
  const nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(where, ": not JSON"));
  if (!doc.is_object() || !doc.contains("tensors") || !doc["tensors"].is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected an object with a \"tensors\" array"));
  }
  if (doc.contains("config")) {
    if (!doc["config"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": \"config\" must be an object (the model's config.json)"));
    }
    req->set_config_json(doc["config"].dump());
  }
  size_t i = 0;
  for (const auto& t : doc["tensors"]) {
    const std::string at = absl::StrCat(where, ": tensors[", i++, "]");
    try {
      auto* d = req->add_tensors();
      d->set_name(t.at("name").get<std::string>());
      d->set_dtype(t.at("dtype").get<std::string>());
      for (const auto& dim : t.at("shape")) {
        if (!dim.is_number_integer()) throw std::runtime_error("shape: dimensions must be integers");
        d->add_shape(dim.get<int64_t>());
      }
      if (t.contains("shm")) {
        d->mutable_shm()->set_path(t["shm"].at("path").get<std::string>());
        d->mutable_shm()->set_offset(t["shm"].value("offset", uint64_t{0}));
      } else if (t.contains("cuda_ipc")) {
        const auto& c = t["cuda_ipc"];
        // proto3 JSON spells bytes in base64, as the Python trainer helper
        // (weightcast.cuda_ipc.descriptors_document) writes them.
        const std::string b64 = c.at("ipc_handle").get<std::string>();
        std::string raw;
        if (!absl::Base64Unescape(b64, &raw)) throw std::runtime_error("ipc_handle: not base64");
        d->mutable_cuda_ipc()->set_ipc_handle(raw);
        d->mutable_cuda_ipc()->set_offset(c.value("offset", uint64_t{0}));
        d->mutable_cuda_ipc()->set_device(c.value("device", 0));
        d->mutable_cuda_ipc()->set_allocation_bytes(c.value("allocation_bytes", uint64_t{0}));
      } else {
        throw std::runtime_error("no location: needs \"shm\" or \"cuda_ipc\"");
      }
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": ", e.what()));
    }
  }
  return absl::OkStatus();
}

}  // namespace weightcast
