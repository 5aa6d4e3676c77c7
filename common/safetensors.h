// The safetensors format, strictly: 8-byte little-endian header length N,
// N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {str: str}?}, then the data.
//
// SafetensorsFile reads (mapping the file); SafetensorsFileWriter writes a
// file whose tensor specs are known up front and whose bytes arrive in
// pieces (what a receiver does); WriteSafetensors writes in one go.
#ifndef WEIGHTCAST_COMMON_SAFETENSORS_H_
#define WEIGHTCAST_COMMON_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"
#include "common/output_tensor.h"
#include "common/tensor_spec.h"

namespace weightcast {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100 << 20;

struct SafetensorsTensor {
  TensorSpec spec;
  uint64_t file_offset = 0;  // absolute offset of the first byte in the file
  const std::byte* data = nullptr;
};

class SafetensorsFile {
 public:
  // INVALID_ARGUMENT naming the file (and tensor): truncated file, header
  // too large or not a JSON object, unknown dtype, offsets that do not match
  // the shape, lie outside the data or overlap, duplicate names.
  // NOT_FOUND if the file is missing.
  [[nodiscard]] static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  // In file order (by data offset).
  [[nodiscard]] const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const { return metadata_; }
  [[nodiscard]] const std::shared_ptr<MappedFile>& file() const { return file_; }

 private:
  std::shared_ptr<MappedFile> file_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Streams one safetensors file: the header is written at Create, tensor
// bytes by pwrite at their offsets in any order; Finish checks that every
// byte was written and syncs.
class SafetensorsFileWriter {
 public:
  // Creates `path` with permission bits `mode` (umask applies) and reserves
  // its whole size on disk (fallocate, where the file system has it): a full
  // disk fails here, naming the file, rather than in the middle of a version.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<SafetensorsFileWriter>> Create(
      const std::string& path, std::vector<TensorSpec> specs,
      const std::map<std::string, std::string>& metadata, uint32_t mode = 0644);
  ~SafetensorsFileWriter();

  // Bytes [offset, offset + bytes) of tensor `index`.
  [[nodiscard]] absl::Status Write(size_t index, uint64_t offset, const std::byte* data,
                                   uint64_t bytes);
  [[nodiscard]] absl::Status Finish();

  [[nodiscard]] const std::vector<TensorSpec>& specs() const { return specs_; }

 private:
  SafetensorsFileWriter() = default;
  std::string path_;
  int fd_ = -1;
  std::vector<TensorSpec> specs_;
  std::vector<uint64_t> offsets_;  // absolute file offset of each tensor
  std::vector<uint64_t> written_;  // bytes written per tensor
};

[[nodiscard]] absl::Status WriteSafetensors(const std::string& path,
                                            std::span<const HostSource> tensors,
                                            const std::map<std::string, std::string>& metadata);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_SAFETENSORS_H_
