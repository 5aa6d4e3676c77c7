// A safetensors file as a trainer's checkpoint directory holds it (header
// length, JSON header, data), opened the way registration opens it.
// Property: every tensor of a file that opens lies inside the file.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/safetensors.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memfd_create("safetensors_fuzz", MFD_CLOEXEC);
  if (fd < 0) return 0;
  size_t done = 0;
  while (done < size) {
    const ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  absl::StatusOr<weightcast::SafetensorsFile> f =
      weightcast::SafetensorsFile::Open("/proc/self/fd/" + std::to_string(fd));
  if (f.ok()) {
    for (const weightcast::SafetensorsTensor& t : f->tensors()) {
      FUZZ_CHECK(t.file_offset + t.spec.ByteSize() <= size);
      FUZZ_CHECK(t.data != nullptr || t.spec.ByteSize() == 0);
    }
  }
  close(fd);
  return 0;
}
