// TensorSpec: what a tensor is (name, dtype, shape), independent of where its
// bytes live. Shapes are row-major and contiguous.
#ifndef WEIGHTCAST_COMMON_TENSOR_SPEC_H_
#define WEIGHTCAST_COMMON_TENSOR_SPEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace weightcast {

// Longest tensor name accepted anywhere (RPC, manifest, safetensors header).
inline constexpr size_t kMaxTensorNameBytes = 1024;
// Most dimensions a tensor may have.
inline constexpr size_t kMaxRank = 8;

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  // Product of the dims (1 for a scalar). Only meaningful after Validate().
  [[nodiscard]] uint64_t NumElements() const;
  // NumElements() * DTypeSize(dtype).
  [[nodiscard]] uint64_t ByteSize() const;

  friend bool operator==(const TensorSpec&, const TensorSpec&) = default;
};

// Checks the name (non-empty, <= kMaxTensorNameBytes, printable ASCII without
// spaces), the dtype, the rank and every dim (>= 0), and that the byte size
// does not overflow 2^62. INVALID_ARGUMENT naming the tensor otherwise.
[[nodiscard]] absl::Status ValidateTensorSpec(const TensorSpec& spec);

// "name [BF16 4x8]" for messages and logs.
[[nodiscard]] std::string DebugString(const TensorSpec& spec);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_TENSOR_SPEC_H_
