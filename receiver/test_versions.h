// Test and benchmark inputs for sinks: a version's tensors filled with random
// bytes, laid into buckets of a given size in order, tensors cut wherever a
// bucket ends (as the planner may), with the manifest a receiver would hold.
#ifndef WEIGHTCAST_RECEIVER_TEST_VERSIONS_H_
#define WEIGHTCAST_RECEIVER_TEST_VERSIONS_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "protocol/wire_format.h"

namespace weightcast::testing {

using Bytes = std::vector<std::byte>;

inline Bytes RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  Bytes b(n);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t r = rng();
    std::memcpy(b.data() + i, &r, std::min<size_t>(8, n - i));
  }
  return b;
}

struct BucketedVersion {
  GlobalManifest manifest;
  std::vector<Bytes> tensors;
  std::vector<Bytes> buckets;
};

inline BucketedVersion MakeBucketedVersion(const std::vector<TensorSpec>& specs,
                                           uint64_t weight_version, uint64_t bucket_bytes,
                                           uint32_t seed) {
  BucketedVersion v;
  v.manifest.weight_version = weight_version;
  for (size_t i = 0; i < specs.size(); ++i) {
    v.tensors.push_back(RandomBytes(specs[i].ByteSize(), seed + static_cast<uint32_t>(i)));
    v.manifest.tensors.push_back(ManifestTensor{.spec = specs[i]});
    v.manifest.payload_bytes += specs[i].ByteSize();
  }
  for (uint32_t t = 0; t < v.tensors.size(); ++t) {
    uint64_t done = 0;
    while (done < v.tensors[t].size()) {
      if (v.buckets.empty() || v.buckets.back().size() == bucket_bytes) {
        v.buckets.emplace_back();
        v.buckets.back().reserve(bucket_bytes);
        v.manifest.buckets.push_back(GlobalBucket{});
        v.manifest.bucket_segments.emplace_back();
      }
      Bytes& b = v.buckets.back();
      const uint64_t n = std::min<uint64_t>(bucket_bytes - b.size(), v.tensors[t].size() - done);
      Segment seg;
      seg.tensor = t;
      seg.bucket = static_cast<uint32_t>(v.buckets.size() - 1);
      seg.bucket_offset = b.size();
      seg.tensor_offset = done;
      seg.bytes = n;
      v.manifest.bucket_segments.back().push_back({t, seg});
      b.insert(b.end(), v.tensors[t].begin() + done, v.tensors[t].begin() + done + n);
      v.manifest.buckets.back().bytes = b.size();
      done += n;
    }
  }
  return v;
}

}  // namespace weightcast::testing

#endif  // WEIGHTCAST_RECEIVER_TEST_VERSIONS_H_
