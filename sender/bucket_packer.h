// BucketPacker: where and how a sender packs its own buckets.
//
// A packer owns two staging slots (the pipeline packs bucket k+1 into one
// while bucket k is broadcast from the other) in the memory the transport
// moves: host memory for gloo (HostBucketPacker, the CPU packer of
// kernels/pack_reference.h), device memory for NCCL (CudaBucketPacker in
// sender/cuda_bucket_packer.h, the GPU kernels). Both write the same bytes:
// the payload with zeroed alignment padding, then the 32-byte trailer with
// the payload's checksum (protocol/wire_format.h).
//
// Threading: Pack runs on the pipeline's packer thread while the update
// thread reads the other slot; Reserve and Scratch on the update thread
// before and after.
#ifndef WEIGHTCAST_SENDER_BUCKET_PACKER_H_
#define WEIGHTCAST_SENDER_BUCKET_PACKER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/output_tensor.h"
#include "kernels/finite_guard.h"
#include "protocol/bucket_plan.h"

namespace weightcast {

// What one update packs from.
struct PackInput {
  std::span<const OutputTensor> outputs;
  // Source i's element 0 is at sources[i].data: a host address, or a device
  // address on the packer's GPU where on_device[i] != 0 (empty: all host).
  std::span<const HostSource> sources;
  std::span<const uint8_t> on_device;
  uint64_t weight_version = 0;
  // The non-finite guard (kernels/finite_guard.h): check every floating-point
  // source element packed for NaN and +-inf. Off only with the group's
  // allow_non_finite.
  bool check_finite = true;

  [[nodiscard]] bool SourceOnDevice(uint32_t i) const {
    return i < on_device.size() && on_device[i] != 0;
  }
};

class BucketPacker {
 public:
  virtual ~BucketPacker() = default;

  // True when the slots are device memory.
  [[nodiscard]] virtual bool device() const = 0;

  // Makes both slots hold at least `bytes` (payload + trailer).
  [[nodiscard]] virtual absl::Status Reserve(size_t bytes) = 0;
  [[nodiscard]] virtual std::byte* slot(int i) = 0;

  // Before an update's first Pack: grows every buffer packing `buckets` of
  // `input` will need, so none grows while the update runs (on a GPU an
  // allocation waits for the device, stalling the transfer in flight).
  [[nodiscard]] virtual absl::Status Prepare(const PackInput& /*input*/,
                                             std::span<const Bucket> /*buckets*/) {
    return absl::OkStatus();
  }

  // A buffer of at least `bytes` in the slots' memory, for buckets of other
  // senders that pass through this rank (transports without a partial
  // broadcast).
  [[nodiscard]] virtual absl::StatusOr<std::byte*> Scratch(size_t bytes) = 0;

  // Packs `bucket` (global index `global_index`) into slot `i` and returns
  // when its bytes are all there. Errors name the bucket and the tensor.
  // With input.check_finite, a NaN or +-inf in a source is
  // NonFiniteValueError (IsNonFiniteValueError: INVALID_ARGUMENT naming the
  // source tensor, the value's class and its lowest flat element index in
  // this bucket), returned once the bucket is packed all the same (payload
  // and trailer), so the caller may still broadcast it and vote no.
  [[nodiscard]] virtual absl::Status Pack(const PackInput& input, const Bucket& bucket,
                                          uint32_t global_index, int i) = 0;
};

// The CPU packer over host sources. FAILED_PRECONDITION from Pack for a
// source in device memory, naming the tensor.
[[nodiscard]] std::unique_ptr<BucketPacker> NewHostBucketPacker();

// Packs segment `s` of bucket `global_index` with the CPU packer into
// `bucket_base + s.bucket_offset` (host memory; its sources must be too),
// recording non-finite source elements in `guard` when given. Errors name
// the bucket and the tensor. Both packers use it: the GPU packer for outputs
// whose sources are in host memory.
[[nodiscard]] absl::Status PackSegmentOnHost(const PackInput& input, const Segment& s,
                                             uint32_t global_index, std::byte* bucket_base,
                                             FiniteGuard* guard);

// PackSegmentOnHost for several segments of one bucket, on up to
// `max_workers` threads (0: the machine's cores, at most 8) when there are
// enough bytes to be worth it (4 MiB per thread); each thread takes a run of
// whole segments with a guard of its own, merged into `guard` after. The
// bytes and findings do not depend on the thread count; on errors, the
// first failing segment's.
[[nodiscard]] absl::Status PackSegmentsOnHost(const PackInput& input,
                                              std::span<const Segment* const> segments,
                                              uint32_t global_index, std::byte* bucket_base,
                                              FiniteGuard* guard, unsigned max_workers = 0);

// What Pack returns for the findings of a bucket: OK when `guard` found
// nothing, else NonFiniteValueError prefixed with the bucket.
[[nodiscard]] absl::Status NonFiniteStatus(const FiniteGuard& guard, const PackInput& input,
                                           uint32_t global_index);

// Where output `out`'s sources are: all in host memory, all on the device,
// or mixed (INVALID_ARGUMENT naming the tensor).
enum class SourcePlace { kHost, kDevice };
[[nodiscard]] absl::StatusOr<SourcePlace> PlaceOfSources(const PackInput& input,
                                                         const OutputTensor& out);

}  // namespace weightcast

#endif  // WEIGHTCAST_SENDER_BUCKET_PACKER_H_
