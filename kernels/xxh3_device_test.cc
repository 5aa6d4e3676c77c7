// The device XXH3 header, compiled by g++, against libxxhash bit for bit:
// every length 0..1100 and block edges up to 4096 over several seeds and
// misalignments. This is how the checksum kernel's hash is tested without a GPU.
#include "kernels/xxh3_device.h"

#include <xxhash.h>

#include <cstddef>
#include <cstring>
#include <random>
#include <vector>

#include "common/checksum.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(Xxh3DeviceTest, MatchesLibxxhashAllShortAndMidLengths) {
  const std::vector<uint8_t> data = RandomBytes(8192 + 16, 1);
  const uint64_t seeds[] = {0, 1, 2, 7, 4095, 0x9E3779B97F4A7C15ULL, ~0ULL};
  for (uint64_t seed : seeds) {
    for (size_t len = 0; len <= 1100; ++len) {
      for (size_t misalign : {0, 3}) {
        const uint8_t* p = data.data() + misalign;
        ASSERT_EQ(xxh3::Hash64WithSeed(p, len, seed), XXH3_64bits_withSeed(p, len, seed))
            << "len " << len << " seed " << seed << " misalign " << misalign;
      }
    }
  }
}

TEST(Xxh3DeviceTest, MatchesLibxxhashLongLengths) {
  const std::vector<uint8_t> data = RandomBytes(8192 + 16, 2);
  std::vector<size_t> lens;
  for (size_t len = 1000; len <= 8192; len += 61) lens.push_back(len);
  for (size_t edge : {1023, 1024, 1025, 2047, 2048, 2049, 3071, 3072, 3073, 4095, 4096, 4097}) {
    lens.push_back(edge);
  }
  for (uint64_t seed : {0ULL, 5ULL, 123456789ULL, 0xFFFFFFFF00000000ULL}) {
    for (size_t len : lens) {
      for (size_t misalign : {0, 1, 8}) {
        const uint8_t* p = data.data() + misalign;
        ASSERT_EQ(xxh3::Hash64WithSeed(p, len, seed), XXH3_64bits_withSeed(p, len, seed))
            << "len " << len << " seed " << seed;
      }
    }
  }
}

TEST(Xxh3DeviceTest, NullEmptyInput) {
  EXPECT_EQ(xxh3::Hash64WithSeed(nullptr, 0, 0), XXH3_64bits_withSeed(nullptr, 0, 0));
}

TEST(Xxh3DeviceTest, ChunkDigestsCombineToBucketChecksum) {
  // The device kernel's recipe, run on the host: per-chunk digests from this
  // header, combined with CombineDigests.
  for (size_t len : {0, 1, 4095, 4096, 4097, 3 * 4096 + 17, 40000}) {
    const std::vector<uint8_t> data = RandomBytes(len, 3);
    const size_t n = (len + kChecksumChunkBytes - 1) / kChecksumChunkBytes;
    std::vector<uint64_t> digests(n);
    for (size_t i = 0; i < n; ++i) {
      const size_t off = i * kChecksumChunkBytes;
      const size_t l = std::min(kChecksumChunkBytes, len - off);
      digests[i] = xxh3::Hash64WithSeed(data.data() + off, l, i);
      ASSERT_EQ(digests[i], ChunkDigest(reinterpret_cast<const std::byte*>(data.data()) + off, l, i));
    }
    const uint64_t combined =
        len == 0 ? xxh3::Hash64WithSeed(nullptr, 0, 0) : CombineDigests(digests.data(), n, len);
    EXPECT_EQ(combined, BucketChecksum(reinterpret_cast<const std::byte*>(data.data()), len))
        << "len " << len;
  }
}

}  // namespace
}  // namespace weightcast
