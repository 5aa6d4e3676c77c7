#include "common/tensor_spec.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace weightcast {

uint64_t TensorSpec::NumElements() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

uint64_t TensorSpec::ByteSize() const { return NumElements() * DTypeSize(dtype); }

absl::Status ValidateTensorSpec(const TensorSpec& spec) {
  if (spec.name.empty()) {
    return absl::InvalidArgumentError("tensor name is empty");
  }
  if (spec.name.size() > kMaxTensorNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor name longer than ", kMaxTensorNameBytes, " bytes: '",
        spec.name.substr(0, 64), "...'"));
  }
  for (char c : spec.name) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", spec.name,
          "': name must be printable ASCII without spaces"));
    }
  }
  if (spec.name == "__metadata__") {
    return absl::InvalidArgumentError(
        "tensor '__metadata__': the name is reserved by the safetensors format");
  }
  if (DTypeSize(spec.dtype) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", spec.name, "': invalid dtype"));
  }
  if (spec.shape.size() > kMaxRank) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", spec.name, "': rank ", spec.shape.size(), " exceeds ", kMaxRank));
  }
  unsigned __int128 bytes = DTypeSize(spec.dtype);
  for (int64_t d : spec.shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name, "': negative dimension ", d));
    }
    bytes *= static_cast<uint64_t>(d);
    if (bytes > (static_cast<unsigned __int128>(1) << 62)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name, "': byte size overflows"));
    }
  }
  return absl::OkStatus();
}

std::string DebugString(const TensorSpec& spec) {
  return absl::StrCat(spec.name, " [", DTypeName(spec.dtype), " ",
                      absl::StrJoin(spec.shape, "x"), "]");
}

}  // namespace weightcast
