#include "common/checksum.h"

#include <xxhash.h>

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace weightcast {
namespace {

std::vector<std::byte> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

// The definition, spelled out independently of the implementation.
uint64_t Reference(const std::vector<std::byte>& d) {
  if (d.empty()) return XXH3_64bits_withSeed(nullptr, 0, 0);
  std::vector<uint64_t> digests;
  for (size_t off = 0, i = 0; off < d.size(); off += 4096, ++i) {
    digests.push_back(XXH3_64bits_withSeed(d.data() + off, std::min<size_t>(4096, d.size() - off), i));
  }
  // x86 is little-endian: the array's bytes are the little-endian encoding.
  return XXH3_64bits_withSeed(digests.data(), 8 * digests.size(), d.size());
}

TEST(ChecksumTest, MatchesDefinitionAtChunkBoundaries) {
  for (size_t n : {0, 1, 17, 240, 241, 4095, 4096, 4097, 3 * 4096 + 5, 1 << 20}) {
    auto d = Random(n, n);
    EXPECT_EQ(BucketChecksum(d.data(), d.size()), Reference(d)) << n;
  }
}

TEST(ChecksumTest, AnySingleBitFlipChangesIt) {
  auto d = Random(3 * 4096 + 77, 7);
  const uint64_t base = BucketChecksum(d.data(), d.size());
  for (size_t i = 0; i < d.size(); i += 97) {
    d[i] ^= std::byte{0x10};
    EXPECT_NE(BucketChecksum(d.data(), d.size()), base) << i;
    d[i] ^= std::byte{0x10};
  }
  // Truncation and swapped chunks differ too.
  EXPECT_NE(BucketChecksum(d.data(), d.size() - 1), base);
  std::vector<std::byte> swapped(d);
  std::swap_ranges(swapped.begin(), swapped.begin() + 4096, swapped.begin() + 4096);
  EXPECT_NE(BucketChecksum(swapped.data(), swapped.size()), base);
}

}  // namespace
}  // namespace weightcast
