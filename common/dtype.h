// The one dtype table of the project: element types as safetensors names them.
//
// Every place that turns a dtype into bytes, a name or a wire value goes
// through this header; nothing else spells dtype names.
#ifndef WEIGHTCAST_COMMON_DTYPE_H_
#define WEIGHTCAST_COMMON_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace weightcast {

// Values are stable: they travel on the wire (manifest) and in the C API.
enum class DType : uint8_t {
  kBool = 1,
  kU8 = 2,
  kI8 = 3,
  kI16 = 4,
  kI32 = 5,
  kI64 = 6,
  kF16 = 7,
  kBF16 = 8,
  kF32 = 9,
  kF64 = 10,
  kF8E4M3 = 11,  // float8_e4m3fn
  kF8E5M2 = 12,
  kU16 = 13,
  kU32 = 14,
  kU64 = 15,
};

// Size of one element in bytes.
[[nodiscard]] size_t DTypeSize(DType dtype);

// The safetensors name ("BF16", "F8_E4M3", ...).
[[nodiscard]] absl::string_view DTypeName(DType dtype);

// Parses a safetensors name; case-sensitive. INVALID_ARGUMENT on anything else.
[[nodiscard]] absl::StatusOr<DType> ParseDType(absl::string_view name);

// Checks a wire value (e.g. from a manifest or the C API). INVALID_ARGUMENT
// when it names no dtype.
[[nodiscard]] absl::StatusOr<DType> DTypeFromWire(uint32_t value);

// True for the floating-point types FP8 quantization may take as input.
[[nodiscard]] bool IsQuantizableFloat(DType dtype);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_DTYPE_H_
