// BucketChecksum: the checksum every bucket (and manifest frame) carries.
//
// Definition (a GPU kernel reproduces it bit for bit):
//   chunks of kChecksumChunkBytes = 4096 bytes, the last one possibly shorter;
//   digest[i] = XXH3_64bits_withSeed(chunk_i, len_i, seed = i)
//   result    = XXH3_64bits_withSeed(digest[0..n) as little-endian uint64,
//                                    8 * n, seed = total length)
//   len == 0:   XXH3_64bits_withSeed(nullptr, 0, 0)
// Chunked so that the chunks can be hashed in parallel (GPU threads), and
// seeded with the index and length so reordered or truncated data differs.
#ifndef WEIGHTCAST_COMMON_CHECKSUM_H_
#define WEIGHTCAST_COMMON_CHECKSUM_H_

#include <cstddef>
#include <cstdint>

namespace weightcast {

inline constexpr size_t kChecksumChunkBytes = 4096;

// XXH3-64 of one chunk, seeded with its index.
[[nodiscard]] uint64_t ChunkDigest(const std::byte* data, size_t len, uint64_t index);

// Combines `n` chunk digests of a buffer of `total_len` bytes.
[[nodiscard]] uint64_t CombineDigests(const uint64_t* digests, size_t n, uint64_t total_len);

[[nodiscard]] uint64_t BucketChecksum(const std::byte* data, size_t len);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CHECKSUM_H_
