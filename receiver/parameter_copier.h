// ParameterCopier: the memory and copy operations ParameterSink needs, for
// targets on a GPU (CUDA: device memory, one stream, copy-table kernel
// launches) or in host memory (plain memcpy and the copy table's CPU
// interpreter: a CPU engine's parameters, and the tests' oracle for the
// sink's bookkeeping).
//
// Copies are queued in order and may run asynchronously; Wait() returns
// once every queued copy is done (buffers they read may then be reused).
// Not thread-safe; calls may come from different threads, one at a time.
#ifndef WEIGHTCAST_RECEIVER_PARAMETER_COPIER_H_
#define WEIGHTCAST_RECEIVER_PARAMETER_COPIER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/copy_table.h"

namespace weightcast {

// Memory in the copier's kind (freed on destruction; the owner waits for the
// copies that use it first).
class CopierBuffer {
 public:
  virtual ~CopierBuffer() = default;
  [[nodiscard]] virtual std::byte* data() const = 0;
};

class ParameterCopier {
 public:
  virtual ~ParameterCopier() = default;
  // -1: host memory; else the CUDA device the targets and buffers are on.
  [[nodiscard]] virtual int device() const = 0;
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<CopierBuffer>> Allocate(
      uint64_t bytes) = 0;
  // `n` bytes from host memory.
  [[nodiscard]] virtual absl::Status CopyFromHost(std::byte* dst, const std::byte* src,
                                                  uint64_t n) = 0;
  // `n` bytes within the copier's memory.
  [[nodiscard]] virtual absl::Status Copy(std::byte* dst, const std::byte* src, uint64_t n) = 0;
  // Readies Run for tables of up to `entries` entries (on a GPU: the
  // kernel's table scratch), so that Run allocates nothing; waits for the
  // queued copies when it has to grow. Run still takes a longer table,
  // growing then.
  [[nodiscard]] virtual absl::Status ReserveTable(size_t entries) = 0;
  // Every entry of `table` (addresses in the copier's memory); on a GPU one
  // kernel launch. The table may be reused when this returns.
  [[nodiscard]] virtual absl::Status Run(std::span<const CopyEntry> table) = 0;
  [[nodiscard]] virtual absl::Status Wait() = 0;
};

// Copier memory that grows on demand and is kept: what a sink sizes at Begin
// and reuses across versions (on a GPU, cudaFree synchronises the device).
// Freed on destruction or Reset; its owner first waits for the copies that
// use it. Not thread-safe.
class CopierArena {
 public:
  // At least `bytes` bytes of `copier`'s memory (contents undefined after a
  // growth); an allocation failure keeps its code and names `what`.
  [[nodiscard]] absl::Status Reserve(ParameterCopier& copier, uint64_t bytes,
                                     absl::string_view what);
  void Reset() {
    buffer_.reset();
    capacity_ = 0;
  }
  [[nodiscard]] std::byte* data() const { return buffer_ ? buffer_->data() : nullptr; }
  [[nodiscard]] uint64_t capacity() const { return capacity_; }

 private:
  std::unique_ptr<CopierBuffer> buffer_;
  uint64_t capacity_ = 0;
};

[[nodiscard]] std::unique_ptr<ParameterCopier> NewHostParameterCopier();
// FAILED_PRECONDITION when there is no such CUDA device.
[[nodiscard]] absl::StatusOr<std::unique_ptr<ParameterCopier>> NewCudaParameterCopier(int device);

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_PARAMETER_COPIER_H_
