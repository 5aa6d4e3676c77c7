#include "common/safetensors.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "gtest/gtest.h"
#include "tools/testing/python.h"

namespace weightcast {
namespace {

namespace fs = std::filesystem;

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return (fs::path(dir ? dir : "/tmp") / name).string();
}

std::vector<std::byte> Bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}


void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  out << std::string(data_bytes, '\x01');
}

TEST(SafetensorsTest, RoundTripKeepsEveryByte) {
  auto a = Bytes(3 * 5 * 2, 1), b = Bytes(7 * 4, 2);
  std::vector<HostSource> tensors = {
      {TensorSpec{"a.weight", DType::kBF16, {3, 5}}, a.data()},
      {TensorSpec{"b", DType::kF32, {7}}, b.data()},
      {TensorSpec{"empty", DType::kF32, {0, 4}}, nullptr},
  };
  const std::string path = TempPath("rt.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}}).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->tensors()[0].spec, tensors[0].spec);
  EXPECT_EQ(std::memcmp(f->tensors()[0].data, a.data(), a.size()), 0);
  EXPECT_EQ(std::memcmp(f->tensors()[1].data, b.data(), b.size()), 0);
  // Data starts 8-byte aligned.
  EXPECT_EQ(f->tensors()[0].file_offset % 8, 0u);
}

TEST(SafetensorsTest, StreamingWriterAcceptsPiecesInAnyOrderAndChecksCoverage) {
  auto a = Bytes(1000, 3);
  const std::string path = TempPath("stream.safetensors");
  auto w = SafetensorsFileWriter::Create(path, {TensorSpec{"a", DType::kU8, {1000}}}, {});
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->Write(0, 600, a.data() + 600, 400).ok());
  EXPECT_EQ((*w)->Finish().code(), absl::StatusCode::kFailedPrecondition);
  w = SafetensorsFileWriter::Create(path, {TensorSpec{"a", DType::kU8, {1000}}}, {});
  ASSERT_TRUE((*w)->Write(0, 600, a.data() + 600, 400).ok());
  ASSERT_TRUE((*w)->Write(0, 0, a.data(), 600).ok());
  EXPECT_EQ((*w)->Write(0, 900, a.data(), 200).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*w)->Finish().ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(std::memcmp(f->tensors()[0].data, a.data(), 1000), 0);
}

TEST(SafetensorsTest, RejectsMalformedFilesNamingTheProblem) {
  struct Case {
    std::string header;
    size_t data;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"not json", 0, "not valid JSON"},
      {"[1,2]", 0, "not a JSON object"},
      {R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", 1, "unknown dtype"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4, "'a'"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4, "truncated"},
      {R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
       8, "overlap"},
      {R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
       2, "duplicate key 'a'"},
      {R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1, "negative"},
      {R"({"a":{"dtype":"U8","shape":[1]}})", 1, "data_offsets"},
  };
  const std::string path = TempPath("bad.safetensors");
  for (const Case& c : cases) {
    WriteRaw(path, c.header, c.data);
    auto f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok()) << c.header;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(f.status().message().find(c.needle), std::string::npos) << f.status();
    EXPECT_NE(f.status().message().find(path), std::string::npos);
  }
  // Header length past the end of the file.
  {
    std::ofstream out(path, std::ios::binary);
    uint64_t n = 1000;
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << "{}";
  }
  EXPECT_NE(SafetensorsFile::Open(path).status().message().find("truncated"), std::string::npos);
  EXPECT_EQ(SafetensorsFile::Open(TempPath("nope.safetensors")).status().code(),
            absl::StatusCode::kNotFound);
}

// The safetensors Python package is the independent reader (and writer).
TEST(SafetensorsTest, InteroperatesWithThePythonPackage) {
  WC_REQUIRE_PYTHON("safetensors, numpy");
  auto a = Bytes(4 * 3 * 2, 5), b = Bytes(5 * 4, 6);
  std::vector<HostSource> tensors = {
      {TensorSpec{"bf", DType::kBF16, {4, 3}}, a.data()},
      {TensorSpec{"f32", DType::kF32, {5}}, b.data()},
  };
  const std::string cpp_file = TempPath("cpp.safetensors");
  ASSERT_TRUE(WriteSafetensors(cpp_file, tensors, {}).ok());
  const std::string py_file = TempPath("py.safetensors");
  const std::string script = TempPath("check.py");
  {
    std::ofstream s(script);
    s << "import sys, numpy as np\n"
         "from safetensors import safe_open\n"
         "from safetensors.numpy import save_file\n"
         "with open(sys.argv[1], 'rb') as fh: data = fh.read()\n"
         "import json, struct\n"
         "n = struct.unpack('<Q', data[:8])[0]\n"
         "h = json.loads(data[8:8+n])\n"
         "assert h['bf']['dtype'] == 'BF16' and h['bf']['shape'] == [4, 3]\n"
         "with safe_open(sys.argv[1], 'np') as f:\n"
         "    x = f.get_tensor('f32')\n"
         "    assert x.dtype == np.float32 and x.shape == (5,)\n"
         "    open(sys.argv[3], 'wb').write(x.tobytes())\n"
         "save_file({'u16': np.arange(6, dtype=np.uint16).reshape(2, 3),\n"
         "           'f': np.array([1.5, -2.0], dtype=np.float32),\n"
         "           'z': np.zeros((0, 3), dtype=np.float32)}, sys.argv[2])\n";
  }
  const std::string out = TempPath("f32.bin");
  ASSERT_EQ(testing::RunPython(script + " " + cpp_file + " " + py_file + " " + out), 0);
  std::ifstream in(out, std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(in)), {});
  ASSERT_EQ(got.size(), b.size());
  EXPECT_EQ(std::memcmp(got.data(), b.data(), b.size()), 0);
  auto f = SafetensorsFile::Open(py_file);
  ASSERT_TRUE(f.ok()) << f.status();
  std::map<std::string, const SafetensorsTensor*> by_name;
  for (const auto& t : f->tensors()) by_name[t.spec.name] = &t;
  ASSERT_EQ(by_name.size(), 3u);
  EXPECT_EQ(by_name["u16"]->spec, (TensorSpec{"u16", DType::kU16, {2, 3}}));
  EXPECT_EQ(reinterpret_cast<const uint16_t*>(by_name["u16"]->data)[5], 5);
  const float* fv = reinterpret_cast<const float*>(by_name["f"]->data);
  EXPECT_EQ(fv[0], 1.5f);
  EXPECT_EQ(fv[1], -2.0f);
  EXPECT_EQ(by_name["z"]->spec.ByteSize(), 0u);
}

}  // namespace
}  // namespace weightcast
