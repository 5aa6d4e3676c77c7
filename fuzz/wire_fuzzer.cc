// Frames, bucket trailers and sender manifests as they arrive from peers.
// Property: a manifest that decodes re-encodes to one that decodes equal.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz/fuzz_check.h"
#include "protocol/wire_format.h"

using namespace weightcast;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  if (size >= kFrameHeaderBytes) {
    (void)DecodeFrameHeader(std::span<const std::byte, kFrameHeaderBytes>(bytes, kFrameHeaderBytes));
  }
  if (size >= kBucketTrailerBytes) (void)DecodeBucketTrailer(bytes);
  // The manifest as receivers decode it: expected version 3, and the rank
  // and sender count a peer would have (the seeds use 2 senders).
  for (uint32_t rank = 0; rank < 2; ++rank) {
    absl::StatusOr<SenderManifest> m = DecodeSenderManifest({bytes, size}, 3, rank, 2);
    if (!m.ok()) continue;
    const std::string again = EncodeSenderManifest(*m);
    absl::StatusOr<SenderManifest> m2 = DecodeSenderManifest(
        {reinterpret_cast<const std::byte*>(again.data()), again.size()}, 3, rank, 2);
    FUZZ_CHECK(m2.ok());
    FUZZ_CHECK(m2->tensors.size() == m->tensors.size());
    FUZZ_CHECK(m2->bucket_bytes == m->bucket_bytes);
    FUZZ_CHECK(m2->config_json == m->config_json);
  }
  return 0;
}
