#include "common/checksum.h"

#include <xxhash.h>

#include <cstring>
#include <vector>

namespace weightcast {

uint64_t ChunkDigest(const std::byte* data, size_t len, uint64_t index) {
  return XXH3_64bits_withSeed(data, len, index);
}

uint64_t CombineDigests(const uint64_t* digests, size_t n, uint64_t total_len) {
  std::vector<unsigned char> le(8 * n);
  for (size_t i = 0; i < n; ++i) {
    for (int b = 0; b < 8; ++b) le[8 * i + b] = static_cast<unsigned char>(digests[i] >> (8 * b));
  }
  return XXH3_64bits_withSeed(le.data(), le.size(), total_len);
}

uint64_t BucketChecksum(const std::byte* data, size_t len) {
  if (len == 0) return XXH3_64bits_withSeed(nullptr, 0, 0);
  const size_t n = (len + kChecksumChunkBytes - 1) / kChecksumChunkBytes;
  std::vector<uint64_t> digests(n);
  for (size_t i = 0; i < n; ++i) {
    const size_t off = i * kChecksumChunkBytes;
    digests[i] = ChunkDigest(data + off, std::min(kChecksumChunkBytes, len - off), i);
  }
  return CombineDigests(digests.data(), n, len);
}

}  // namespace weightcast
