// XXH3-64 (xxHash 0.8.1, XXH3_64bits_withSeed) as one header that compiles
// under both nvcc (__host__ __device__) and g++, so the GPU checksum kernel
// and a plain host test share the exact code that is compared bit for bit
// with libxxhash.
//
// Written from the algorithm in /usr/include/xxhash.h (0.8.1): the short
// paths (0, 1-3, 4-8, 9-16, 17-128, 129-240 bytes) and the long path (64-byte
// stripes, 16 stripes per 1024-byte block, scramble per block, last stripe,
// merge). With a non-zero seed the long path uses XXH3_initCustomSecret's
// derived secret, as XXH3_64bits_withSeed does. Scalar only (no SIMD): on a
// GPU each thread hashes one chunk.
//
// Any length is correct; the secret array costs 192 bytes of per-thread
// local memory on the device, so it is meant for chunks (<= 4096 bytes in
// this project).
#ifndef WEIGHTCAST_KERNELS_XXH3_DEVICE_H_
#define WEIGHTCAST_KERNELS_XXH3_DEVICE_H_

#include <cstddef>
#include <cstdint>

#include "kernels/host_device.h"

namespace weightcast::xxh3 {

inline constexpr uint32_t kPrime32_1 = 0x9E3779B1U;
inline constexpr uint32_t kPrime32_2 = 0x85EBCA77U;
inline constexpr uint32_t kPrime32_3 = 0xC2B2AE3DU;
inline constexpr uint64_t kPrime64_1 = 0x9E3779B185EBCA87ULL;
inline constexpr uint64_t kPrime64_2 = 0xC2B2AE3D27D4EB4FULL;
inline constexpr uint64_t kPrime64_3 = 0x165667B19E3779F9ULL;
inline constexpr uint64_t kPrime64_4 = 0x85EBCA77C2B2AE63ULL;
inline constexpr uint64_t kPrime64_5 = 0x27D4EB2F165667C5ULL;
inline constexpr uint64_t kPrimeMx1 = 0x165667919E3779F9ULL;
inline constexpr uint64_t kPrimeMx2 = 0x9FB21C651E98DF25ULL;

inline constexpr int kSecretSize = 192;     // XXH_SECRET_DEFAULT_SIZE
inline constexpr int kSecretSizeMin = 136;  // XXH3_SECRET_SIZE_MIN
inline constexpr int kStripeLen = 64;
inline constexpr int kSecretConsumeRate = 8;
inline constexpr int kMidsizeStartOffset = 3;
inline constexpr int kMidsizeLastOffset = 17;
inline constexpr int kSecretLastAccStart = 7;
inline constexpr int kSecretMergeAccsStart = 11;

// XXH3_kSecret as little-endian 64-bit words (the byte table of xxhash.h).
WC_HOST_DEVICE WC_FORCE_INLINE uint64_t DefaultSecretWord(int i) {
  constexpr uint64_t kWords[24] = {
      0xbe4ba423396cfeb8ULL, 0x1cad21f72c81017cULL, 0xdb979083e96dd4deULL, 0x1f67b3b7a4a44072ULL,
      0x78e5c0cc4ee679cbULL, 0x2172ffcc7dd05a82ULL, 0x8e2443f7744608b8ULL, 0x4c263a81e69035e0ULL,
      0xcb00c391bb52283cULL, 0xa32e531b8b65d088ULL, 0x4ef90da297486471ULL, 0xd8acdea946ef1938ULL,
      0x3f349ce33f76faa8ULL, 0x1d4f0bc7c7bbdcf9ULL, 0x3159b4cd4be0518aULL, 0x647378d9c97e9fc8ULL,
      0xc3ebd33483acc5eaULL, 0xeb6313faffa081c5ULL, 0x49daf0b751dd0d17ULL, 0x9e68d429265516d3ULL,
      0xfca1477d58be162bULL, 0xce31d07ad1b8f88fULL, 0x280416958f3acb45ULL, 0x7e404bbbcafbd7afULL,
  };
  return kWords[i];
}

WC_HOST_DEVICE WC_FORCE_INLINE uint64_t Rotl64(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

WC_HOST_DEVICE WC_FORCE_INLINE uint32_t Swap32(uint32_t x) {
  return ((x << 24) & 0xff000000U) | ((x << 8) & 0x00ff0000U) | ((x >> 8) & 0x0000ff00U) |
         ((x >> 24) & 0x000000ffU);
}

WC_HOST_DEVICE WC_FORCE_INLINE uint64_t Swap64(uint64_t x) {
  return (static_cast<uint64_t>(Swap32(static_cast<uint32_t>(x))) << 32) |
         Swap32(static_cast<uint32_t>(x >> 32));
}

// Little-endian loads from any alignment (both targets are little-endian).
WC_HOST_DEVICE WC_FORCE_INLINE uint64_t Read64(const uint8_t* p) {
#if !defined(__CUDA_ARCH__)
  uint64_t h;
  __builtin_memcpy(&h, p, 8);  // host: no aliasing questions, one load
  return h;
#else
  if ((reinterpret_cast<uintptr_t>(p) & 7) == 0) return *reinterpret_cast<const uint64_t*>(p);
#endif
  uint64_t v = 0;
WC_UNROLL
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

WC_HOST_DEVICE WC_FORCE_INLINE uint32_t Read32(const uint8_t* p) {
#if !defined(__CUDA_ARCH__)
  uint32_t h;
  __builtin_memcpy(&h, p, 4);
  return h;
#else
  if ((reinterpret_cast<uintptr_t>(p) & 3) == 0) return *reinterpret_cast<const uint32_t*>(p);
#endif
  uint32_t v = 0;
WC_UNROLL
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}

WC_HOST_DEVICE WC_FORCE_INLINE uint64_t Mul128Fold64(uint64_t lhs, uint64_t rhs) {
#if defined(__CUDA_ARCH__)
  return (lhs * rhs) ^ __umul64hi(lhs, rhs);
#else
  const unsigned __int128 product = static_cast<unsigned __int128>(lhs) * rhs;
  return static_cast<uint64_t>(product) ^ static_cast<uint64_t>(product >> 64);
#endif
}

WC_HOST_DEVICE WC_FORCE_INLINE uint64_t Xxh64Avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kPrime64_2;
  h ^= h >> 29;
  h *= kPrime64_3;
  h ^= h >> 32;
  return h;
}

WC_HOST_DEVICE WC_FORCE_INLINE uint64_t Avalanche(uint64_t h) {
  h ^= h >> 37;
  h *= kPrimeMx1;
  h ^= h >> 32;
  return h;
}

WC_HOST_DEVICE WC_FORCE_INLINE uint64_t Rrmxmx(uint64_t h, uint64_t len) {
  h ^= Rotl64(h, 49) ^ Rotl64(h, 24);
  h *= kPrimeMx2;
  h ^= (h >> 35) + len;
  h *= kPrimeMx2;
  return h ^ (h >> 28);
}

// The 192-byte secret XXH3_64bits_withSeed uses: the default one for seed 0,
// else XXH3_initCustomSecret(seed). Stored as words so reads at any byte
// offset work through Read64/Read32 on `bytes()`.
struct Secret {
  uint64_t words[kSecretSize / 8];
  WC_HOST_DEVICE const uint8_t* bytes() const { return reinterpret_cast<const uint8_t*>(words); }
};

WC_HOST_DEVICE WC_FORCE_INLINE void InitSecret(uint64_t seed, Secret* s) {
WC_UNROLL
  for (int i = 0; i < kSecretSize / 16; ++i) {
    s->words[2 * i] = DefaultSecretWord(2 * i) + seed;
    s->words[2 * i + 1] = DefaultSecretWord(2 * i + 1) - seed;
  }
}

WC_HOST_DEVICE WC_FORCE_INLINE uint64_t Mix16B(const uint8_t* in, const uint8_t* secret,
                                               uint64_t seed) {
  const uint64_t lo = Read64(in), hi = Read64(in + 8);
  return Mul128Fold64(lo ^ (Read64(secret) + seed), hi ^ (Read64(secret + 8) - seed));
}

// Short inputs read the default secret and mix the seed in directly.
WC_HOST_DEVICE inline uint64_t HashShort(const uint8_t* in, size_t len, const uint8_t* ks,
                                         uint64_t seed) {
  if (len == 0) return Xxh64Avalanche(seed ^ (Read64(ks + 56) ^ Read64(ks + 64)));
  if (len <= 3) {
    const uint32_t c1 = in[0], c2 = in[len >> 1], c3 = in[len - 1];
    const uint32_t combined = (c1 << 16) | (c2 << 24) | c3 | (static_cast<uint32_t>(len) << 8);
    const uint64_t bitflip = (Read32(ks) ^ Read32(ks + 4)) + seed;
    return Xxh64Avalanche(static_cast<uint64_t>(combined) ^ bitflip);
  }
  if (len <= 8) {
    seed ^= static_cast<uint64_t>(Swap32(static_cast<uint32_t>(seed))) << 32;
    const uint32_t in1 = Read32(in), in2 = Read32(in + len - 4);
    const uint64_t bitflip = (Read64(ks + 8) ^ Read64(ks + 16)) - seed;
    const uint64_t in64 = in2 + (static_cast<uint64_t>(in1) << 32);
    return Rrmxmx(in64 ^ bitflip, len);
  }
  if (len <= 16) {
    const uint64_t bitflip1 = (Read64(ks + 24) ^ Read64(ks + 32)) + seed;
    const uint64_t bitflip2 = (Read64(ks + 40) ^ Read64(ks + 48)) - seed;
    const uint64_t lo = Read64(in) ^ bitflip1;
    const uint64_t hi = Read64(in + len - 8) ^ bitflip2;
    const uint64_t acc = len + Swap64(lo) + hi + Mul128Fold64(lo, hi);
    return Avalanche(acc);
  }
  if (len <= 128) {
    uint64_t acc = len * kPrime64_1;
    if (len > 32) {
      if (len > 64) {
        if (len > 96) {
          acc += Mix16B(in + 48, ks + 96, seed);
          acc += Mix16B(in + len - 64, ks + 112, seed);
        }
        acc += Mix16B(in + 32, ks + 64, seed);
        acc += Mix16B(in + len - 48, ks + 80, seed);
      }
      acc += Mix16B(in + 16, ks + 32, seed);
      acc += Mix16B(in + len - 32, ks + 48, seed);
    }
    acc += Mix16B(in + 0, ks + 0, seed);
    acc += Mix16B(in + len - 16, ks + 16, seed);
    return Avalanche(acc);
  }
  // 129..240
  uint64_t acc = len * kPrime64_1;
  const int rounds = static_cast<int>(len) / 16;
  for (int i = 0; i < 8; ++i) acc += Mix16B(in + 16 * i, ks + 16 * i, seed);
  acc = Avalanche(acc);
  for (int i = 8; i < rounds; ++i) {
    acc += Mix16B(in + 16 * i, ks + 16 * (i - 8) + kMidsizeStartOffset, seed);
  }
  acc += Mix16B(in + len - 16, ks + kSecretSizeMin - kMidsizeLastOffset, seed);
  return Avalanche(acc);
}

WC_HOST_DEVICE WC_FORCE_INLINE void Accumulate512(uint64_t* acc, const uint8_t* in,
                                                  const uint8_t* secret) {
WC_UNROLL
  for (int i = 0; i < 8; ++i) {
    const uint64_t data_val = Read64(in + 8 * i);
    const uint64_t data_key = data_val ^ Read64(secret + 8 * i);
    acc[i ^ 1] += data_val;
    acc[i] += static_cast<uint64_t>(static_cast<uint32_t>(data_key)) * (data_key >> 32);
  }
}

WC_HOST_DEVICE WC_FORCE_INLINE void ScrambleAcc(uint64_t* acc, const uint8_t* secret) {
WC_UNROLL
  for (int i = 0; i < 8; ++i) {
    uint64_t a = acc[i];
    a ^= a >> 47;
    a ^= Read64(secret + 8 * i);
    a *= kPrime32_1;
    acc[i] = a;
  }
}

WC_HOST_DEVICE inline uint64_t HashLong(const uint8_t* in, size_t len, const uint8_t* secret) {
  uint64_t acc[8] = {kPrime32_3, kPrime64_1, kPrime64_2, kPrime64_3,
                     kPrime64_4, kPrime32_2, kPrime64_5, kPrime32_1};
  constexpr size_t kStripesPerBlock = (kSecretSize - kStripeLen) / kSecretConsumeRate;  // 16
  constexpr size_t kBlockLen = kStripeLen * kStripesPerBlock;                           // 1024
  const size_t blocks = (len - 1) / kBlockLen;
  for (size_t n = 0; n < blocks; ++n) {
    for (size_t s = 0; s < kStripesPerBlock; ++s) {
      Accumulate512(acc, in + n * kBlockLen + s * kStripeLen, secret + s * kSecretConsumeRate);
    }
    ScrambleAcc(acc, secret + kSecretSize - kStripeLen);
  }
  const size_t stripes = ((len - 1) - kBlockLen * blocks) / kStripeLen;
  for (size_t s = 0; s < stripes; ++s) {
    Accumulate512(acc, in + blocks * kBlockLen + s * kStripeLen, secret + s * kSecretConsumeRate);
  }
  Accumulate512(acc, in + len - kStripeLen, secret + kSecretSize - kStripeLen - kSecretLastAccStart);
  uint64_t result = len * kPrime64_1;
  const uint8_t* ms = secret + kSecretMergeAccsStart;
WC_UNROLL
  for (int i = 0; i < 4; ++i) {
    result += Mul128Fold64(acc[2 * i] ^ Read64(ms + 16 * i), acc[2 * i + 1] ^ Read64(ms + 16 * i + 8));
  }
  return Avalanche(result);
}

// XXH3_64bits_withSeed(data, len, seed), bit for bit.
WC_HOST_DEVICE inline uint64_t Hash64WithSeed(const void* data, size_t len, uint64_t seed) {
  const uint8_t* in = static_cast<const uint8_t*>(data);
  Secret secret;
  if (len <= 240) {
    InitSecret(0, &secret);
    return HashShort(in, len, secret.bytes(), seed);
  }
  InitSecret(seed, &secret);  // seed 0 gives the default secret
  return HashLong(in, len, secret.bytes());
}

}  // namespace weightcast::xxh3

#endif  // WEIGHTCAST_KERNELS_XXH3_DEVICE_H_
