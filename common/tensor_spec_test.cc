#include "common/tensor_spec.h"

#include "gtest/gtest.h"

namespace weightcast {
namespace {

TEST(TensorSpecTest, ByteSizeCountsElementsTimesDtype) {
  TensorSpec spec{"w", DType::kBF16, {3, 5}};
  EXPECT_TRUE(ValidateTensorSpec(spec).ok());
  EXPECT_EQ(spec.NumElements(), 15u);
  EXPECT_EQ(spec.ByteSize(), 30u);
  TensorSpec scalar{"s", DType::kF32, {}};
  EXPECT_EQ(scalar.ByteSize(), 4u);
}

TEST(TensorSpecTest, RejectsBadNamesAndShapes) {
  EXPECT_EQ(ValidateTensorSpec({"", DType::kF32, {1}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateTensorSpec({"a b", DType::kF32, {1}}).code(),
            absl::StatusCode::kInvalidArgument);
  auto neg = ValidateTensorSpec({"neg", DType::kF32, {2, -1}});
  EXPECT_EQ(neg.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(neg.message().find("neg"), std::string::npos);
  EXPECT_FALSE(ValidateTensorSpec({"big", DType::kF64, {1 << 30, 1 << 30, 1 << 30}}).ok());
  EXPECT_FALSE(ValidateTensorSpec({"dt", static_cast<DType>(99), {1}}).ok());
  // safetensors' header key: a tensor of that name could never be written.
  auto meta = ValidateTensorSpec({"__metadata__", DType::kF32, {1}});
  EXPECT_EQ(meta.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(meta.message().find("reserved"), std::string::npos);
}

}  // namespace
}  // namespace weightcast
