#include "sender/bucket_packer.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/checksum.h"
#include "common/status_macros.h"
#include "kernels/pack_reference.h"
#include "protocol/wire_format.h"

namespace weightcast {
namespace {

class HostBucketPacker final : public BucketPacker {
 public:
  bool device() const override { return false; }

  absl::Status Reserve(size_t bytes) override {
    for (auto& s : slots_) {
      if (s.size() < bytes) s.resize(bytes);
    }
    return absl::OkStatus();
  }
  std::byte* slot(int i) override { return slots_[i].data(); }

  absl::StatusOr<std::byte*> Scratch(size_t bytes) override {
    if (scratch_.size() < bytes) scratch_.resize(bytes);
    return scratch_.data();
  }

  absl::Status Pack(const PackInput& input, const Bucket& bucket, uint32_t global_index,
                    int i) override {
    std::byte* dst = slots_[i].data();
    guard_.Clear();
    FiniteGuard* guard = input.check_finite ? &guard_ : nullptr;
    uint64_t cursor = 0;
    segments_.clear();
    for (const Segment& s : bucket.segments) {
      ASSIGN_OR_RETURN(SourcePlace place, PlaceOfSources(input, input.outputs[s.tensor]));
      if (place != SourcePlace::kHost) {
        return absl::FailedPreconditionError(absl::StrCat(
            "bucket ", global_index, ": tensor '", input.outputs[s.tensor].spec.name,
            "' reads GPU memory, and this transport moves host memory (use nccl)"));
      }
      // Zero the alignment padding so the checksum is deterministic.
      if (s.bucket_offset > cursor) std::memset(dst + cursor, 0, s.bucket_offset - cursor);
      segments_.push_back(&s);
      cursor = s.bucket_offset + s.bytes;
    }
    RETURN_IF_ERROR(PackSegmentsOnHost(input, segments_, global_index, dst, guard));
    EncodeBucketTrailer(BucketTrailer{.checksum = BucketChecksum(dst, bucket.bytes),
                                      .weight_version = input.weight_version,
                                      .bucket_index = global_index,
                                      .payload_bytes = bucket.bytes},
                        dst + bucket.bytes);
    return NonFiniteStatus(guard_, input, global_index);
  }

 private:
  std::vector<std::byte> slots_[2];
  std::vector<std::byte> scratch_;
  std::vector<const Segment*> segments_;
  FiniteGuard guard_;
};

}  // namespace

std::unique_ptr<BucketPacker> NewHostBucketPacker() {
  return std::make_unique<HostBucketPacker>();
}

absl::Status PackSegmentOnHost(const PackInput& input, const Segment& s, uint32_t global_index,
                               std::byte* bucket_base, FiniteGuard* guard) {
  absl::Status st = PackOutputRange(input.outputs[s.tensor], input.sources, s.tensor_offset,
                                    s.bytes, bucket_base + s.bucket_offset, guard);
  if (st.ok()) return st;
  return absl::Status(st.code(), absl::StrCat("packing bucket ", global_index, ": ", st.message()));
}

absl::Status PackSegmentsOnHost(const PackInput& input, std::span<const Segment* const> segments,
                                uint32_t global_index, std::byte* bucket_base, FiniteGuard* guard,
                                unsigned max_workers) {
  constexpr uint64_t kBytesPerWorker = uint64_t{4} << 20;
  uint64_t bytes = 0;
  for (const Segment* s : segments) bytes += s->bytes;
  if (max_workers == 0) max_workers = std::min(8u, std::max(1u, std::thread::hardware_concurrency()));
  const size_t workers = std::min<size_t>(
      {max_workers, segments.size(), std::max<uint64_t>(1, bytes / kBytesPerWorker)});
  if (workers <= 1) {
    for (const Segment* s : segments) {
      RETURN_IF_ERROR(PackSegmentOnHost(input, *s, global_index, bucket_base, guard));
    }
    return absl::OkStatus();
  }
  // Runs of whole segments of about bytes / workers each.
  std::vector<size_t> first(workers + 1, segments.size());
  first[0] = 0;
  uint64_t acc = 0;
  size_t w = 1;
  for (size_t k = 0; k < segments.size() && w < workers; ++k) {
    acc += segments[k]->bytes;
    if (acc >= bytes * w / workers) first[w++] = k + 1;
  }
  std::vector<absl::Status> status(workers);
  std::vector<FiniteGuard> guards(workers);
  std::vector<std::thread> threads;
  threads.reserve(workers);
  for (size_t t = 0; t < workers; ++t) {
    threads.emplace_back([&, t] {
      for (size_t k = first[t]; k < first[t + 1]; ++k) {
        status[t] = PackSegmentOnHost(input, *segments[k], global_index, bucket_base,
                                      guard != nullptr ? &guards[t] : nullptr);
        if (!status[t].ok()) return;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t t = 0; t < workers; ++t) {
    if (guard != nullptr) guard->Merge(guards[t]);
  }
  for (const absl::Status& st : status) RETURN_IF_ERROR(st);
  return absl::OkStatus();
}

absl::Status NonFiniteStatus(const FiniteGuard& guard, const PackInput& input,
                             uint32_t global_index) {
  absl::Status st = guard.Report(input.sources);
  if (st.ok()) return st;
  return WithMessagePrefix(st, absl::StrCat("bucket ", global_index, ": "));
}

absl::StatusOr<SourcePlace> PlaceOfSources(const PackInput& input, const OutputTensor& out) {
  bool host = false;
  bool device = false;
  for (const Piece& p : out.pieces) {
    (input.SourceOnDevice(p.source) ? device : host) = true;
  }
  if (host && device) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", out.spec.name,
        "' is assembled from sources in both host and GPU memory; register its parts the same way"));
  }
  return device ? SourcePlace::kDevice : SourcePlace::kHost;
}

}  // namespace weightcast
