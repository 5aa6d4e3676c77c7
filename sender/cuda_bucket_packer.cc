#include "sender/cuda_bucket_packer.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/checksum_cuda.h"
#include "kernels/checksum_gpu.h"
#include "kernels/cuda_buffer.h"
#include "kernels/cuda_check.h"
#include "kernels/finite_guard.h"
#include "kernels/fp8_segments.h"
#include "kernels/pack_cuda.h"
#include "kernels/pack_table.h"
#include "protocol/wire_format.h"

namespace weightcast {
namespace {

// Source of the zero bytes that fill alignment padding (a copy-table entry
// reading from it), so padding costs no launch of its own.
constexpr size_t kZeroBytes = kSegmentAlignment;

class CudaBucketPacker final : public BucketPacker {
 public:
  explicit CudaBucketPacker(CudaStream stream)
      : device_(stream.device()), stream_(stream.get()), owned_stream_(std::move(stream)) {}

  absl::Status Init() {
    RETURN_IF_ERROR(zeros_.Reserve(kZeroBytes, device_));
    // On the packer's stream (the legacy default stream does not order
    // against it), finished before the first copy can read the zeros.
    RETURN_IF_CUDA_ERROR(cudaMemsetAsync(zeros_.data(), 0, kZeroBytes, stream_));
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_));
    return trailer_.Reserve(kBucketTrailerBytes);
  }

  bool device() const override { return true; }

  absl::Status Reserve(size_t bytes) override {
    for (DeviceBuffer& s : slots_) RETURN_IF_ERROR(s.Reserve(bytes, device_));
    RETURN_IF_ERROR(digests_.Reserve(NumChecksumChunks(bytes) * sizeof(uint64_t), device_));
    slot_bytes_ = bytes;
    return absl::OkStatus();
  }
  std::byte* slot(int i) override { return slots_[i].data(); }

  absl::Status Prepare(const PackInput& input, std::span<const Bucket> buckets) override {
    // Upper bounds over the buckets of what PackOnStream builds: one
    // zero-fill entry per segment (padding is under kZeroBytes), up to three
    // copy entries per piece (head, body, tail), one FP8 row segment per
    // piece and one FP8 launch entry per segment of an FP8 output;
    // host-sourced outputs use the pinned staging slots.
    size_t entries = 0, fp8_segments = 0, fp8_launches = 0;
    bool host = false;
    for (const Bucket& b : buckets) {
      size_t e = 0, f = 0, l = 0;
      for (const Segment& seg : b.segments) {
        const OutputTensor& out = input.outputs[seg.tensor];
        ASSIGN_OR_RETURN(SourcePlace place, PlaceOfSources(input, out));
        ++e;
        if (place == SourcePlace::kHost) {
          host = true;
        } else if (out.quant == QuantKind::kNone) {
          e += kMaxCopyEntriesPerPiece * out.pieces.size();
        } else {
          f += out.pieces.size();
          ++l;
        }
      }
      entries = std::max(entries, e);
      fp8_segments = std::max(fp8_segments, f);
      fp8_launches = std::max(fp8_launches, l);
    }
    table_.reserve(entries);
    RETURN_IF_ERROR(table_scratch_.Reserve(CopyTableScratchBytes(entries), device_));
    if (fp8_segments > 0) {
      RETURN_IF_ERROR(fp8_scratch_.Reserve(fp8_segments * sizeof(Fp8RowSegment), device_));
      RETURN_IF_ERROR(fp8_host_.Reserve(fp8_segments * sizeof(Fp8RowSegment)));
      RETURN_IF_ERROR(
          fp8_params_scratch_.Reserve(Fp8QuantizeScratchBytes(fp8_launches), device_));
      fp8_params_.reserve(fp8_launches);
    }
    if (input.check_finite && !input.sources.empty()) {
      RETURN_IF_ERROR(guard_words_.Reserve(input.sources.size() * sizeof(uint64_t), device_));
      RETURN_IF_ERROR(guard_host_.Reserve(input.sources.size() * sizeof(uint64_t)));
    }
    if (host) {
      for (PinnedBuffer& h : host_) RETURN_IF_ERROR(h.Reserve(slot_bytes_));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::byte*> Scratch(size_t bytes) override {
    RETURN_IF_ERROR(scratch_.Reserve(bytes, device_));
    return scratch_.data();
  }

  absl::Status Pack(const PackInput& input, const Bucket& bucket, uint32_t global_index,
                    int i) override {
    absl::Status s = PackOnStream(input, bucket, global_index, i);
    if (!s.ok()) {
      // Leave nothing running on the stream that still reads the sources.
      (void)cudaStreamSynchronize(stream_);
    }
    return s;
  }

 private:
  absl::Status PackOnStream(const PackInput& input, const Bucket& bucket, uint32_t g, int i) {
    if (bucket.bytes + kBucketTrailerBytes > slot_bytes_) {
      return absl::InternalError(absl::StrCat("bucket ", g, ": ", bucket.bytes,
                                              " bytes do not fit the reserved slot of ",
                                              slot_bytes_));
    }
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_), "bucket ", g);
    std::byte* dst = slots_[i].data();
    const auto dst_addr = reinterpret_cast<uint64_t>(dst);
    std::vector<uint64_t> addrs(input.sources.size());
    for (size_t k = 0; k < addrs.size(); ++k) {
      addrs[k] = reinterpret_cast<uint64_t>(input.sources[k].data);
    }

    table_.clear();
    fp8_.clear();
    guard_.Clear();
    FiniteGuard* host_guard = input.check_finite ? &guard_ : nullptr;
    // Guard words of this bucket's device sources: slot k is source
    // slot_sources_[k]; slot_of_ maps back (kNoSlot for the others).
    slot_of_.resize(input.sources.size(), kNoSlot);
    struct ResetSlots {
      CudaBucketPacker* p;
      ~ResetSlots() {
        for (uint32_t src : p->slot_sources_) p->slot_of_[src] = kNoSlot;
        p->slot_sources_.clear();
      }
    } reset_slots{this};
    const std::span<const uint32_t> guard_slots =
        input.check_finite ? std::span<const uint32_t>(slot_of_) : std::span<const uint32_t>();
    // Runs of host-packed bytes [begin, end) to copy up.
    std::vector<std::pair<uint64_t, uint64_t>> host_runs;
    host_segments_.clear();
    uint64_t cursor = 0;
    for (const Segment& s : bucket.segments) {
      const OutputTensor& out = input.outputs[s.tensor];
      for (uint64_t gap = cursor; gap < s.bucket_offset; gap += kZeroBytes) {
        const uint64_t n = std::min<uint64_t>(kZeroBytes, s.bucket_offset - gap);
        table_.push_back(CopyEntry{.src = reinterpret_cast<uint64_t>(zeros_.data()),
                                   .dst = dst_addr + gap,
                                   .src_row_stride = n,
                                   .dst_row_stride = n,
                                   .rows = 1,
                                   .cols = n,
                                   .elem_size = 1});
      }
      cursor = s.bucket_offset + s.bytes;
      ASSIGN_OR_RETURN(SourcePlace place, PlaceOfSources(input, out));
      if (place == SourcePlace::kHost) {
        host_segments_.push_back(&s);
        if (!host_runs.empty() && host_runs.back().second == s.bucket_offset) {
          host_runs.back().second = cursor;
        } else {
          host_runs.emplace_back(s.bucket_offset, cursor);
        }
        continue;
      }
      if (input.check_finite) {
        for (const Piece& p : out.pieces) {
          if (p.source < slot_of_.size() && slot_of_[p.source] == kNoSlot) {
            slot_of_[p.source] = static_cast<uint32_t>(slot_sources_.size());
            slot_sources_.push_back(p.source);
          }
        }
      }
      absl::Status built;
      if (out.quant == QuantKind::kNone) {
        built = BuildPackTable(out, s.tensor_offset, s.bytes, addrs, dst_addr, s.bucket_offset,
                               &table_, guard_slots);
      } else {
        Fp8Launch launch;
        built = BuildFp8Launch(out, s.tensor_offset, s.bytes, addrs, dst_addr, s.bucket_offset,
                               &launch, guard_slots);
        if (built.ok()) fp8_.push_back(std::move(launch));
      }
      if (!built.ok()) {
        return absl::Status(built.code(), absl::StrCat("packing bucket ", g, " on the GPU: ",
                                                       built.message()));
      }
    }

    // Host-sourced segments (FP8 included) on the CPU, on several threads.
    if (!host_segments_.empty()) {
      RETURN_IF_ERROR(host_[i].Reserve(slot_bytes_));
      RETURN_IF_ERROR(PackSegmentsOnHost(input, host_segments_, g, host_[i].data(), host_guard));
    }
    unsigned long long* guard_words = nullptr;
    const size_t guard_bytes = slot_sources_.size() * sizeof(uint64_t);
    if (guard_bytes > 0) {
      RETURN_IF_ERROR(guard_words_.Reserve(guard_bytes, device_));
      RETURN_IF_ERROR(guard_host_.Reserve(guard_bytes));
      guard_words = reinterpret_cast<unsigned long long*>(guard_words_.data());
      RETURN_IF_CUDA_ERROR(cudaMemsetAsync(guard_words, 0xFF, guard_bytes, stream_), "bucket ", g);
    }
    for (const auto& [begin, end] : host_runs) {
      RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst + begin, host_[i].data() + begin, end - begin,
                                           cudaMemcpyHostToDevice, stream_),
                           "bucket ", g);
    }
    if (!table_.empty()) {
      RETURN_IF_ERROR(table_scratch_.Reserve(CopyTableScratchBytes(table_.size()), device_));
      RETURN_IF_CUDA_ERROR(
          LaunchCopyTable(table_.data(), table_.size(), table_scratch_.data(), stream_, guard_words),
          "bucket ", g, ": copy table of ", table_.size(), " entries");
    }
    if (!fp8_.empty()) {
      // All row segments in one upload; each launch points into it.
      size_t total = 0;
      for (const Fp8Launch& l : fp8_) total += l.segments.size();
      RETURN_IF_ERROR(fp8_scratch_.Reserve(total * sizeof(Fp8RowSegment), device_));
      RETURN_IF_ERROR(fp8_host_.Reserve(total * sizeof(Fp8RowSegment)));
      auto* host_rows = reinterpret_cast<Fp8RowSegment*>(fp8_host_.data());
      auto* dev_rows = reinterpret_cast<Fp8RowSegment*>(fp8_scratch_.data());
      size_t at = 0;
      for (Fp8Launch& l : fp8_) {
        std::memcpy(host_rows + at, l.segments.data(), l.segments.size() * sizeof(Fp8RowSegment));
        l.params.segments = dev_rows + at;
        l.params.guard = guard_words;
        l.params.num_segments = static_cast<uint32_t>(l.segments.size());
        at += l.segments.size();
      }
      RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dev_rows, host_rows, total * sizeof(Fp8RowSegment),
                                           cudaMemcpyHostToDevice, stream_),
                           "bucket ", g);
      // Every FP8 output of the bucket in one launch.
      fp8_params_.clear();
      for (const Fp8Launch& l : fp8_) fp8_params_.push_back(l.params);
      RETURN_IF_ERROR(
          fp8_params_scratch_.Reserve(Fp8QuantizeScratchBytes(fp8_params_.size()), device_));
      RETURN_IF_CUDA_ERROR(LaunchFp8Quantize(fp8_params_.data(), fp8_params_.size(),
                                             fp8_params_scratch_.data(), stream_),
                           "bucket ", g, ": FP8 quantization of ", fp8_params_.size(),
                           " outputs");
    }
    if (guard_bytes > 0) {
      RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(guard_host_.data(), guard_words, guard_bytes,
                                           cudaMemcpyDeviceToHost, stream_),
                           "bucket ", g);
    }
    // The checksum waits for everything above (one host synchronisation per
    // bucket); the pinned buffers may then be reused.
    ASSIGN_OR_RETURN(uint64_t checksum,
                     DeviceBucketChecksum(dst, bucket.bytes,
                                          reinterpret_cast<uint64_t*>(digests_.data()), stream_));
    EncodeBucketTrailer(BucketTrailer{.checksum = checksum,
                                      .weight_version = input.weight_version,
                                      .bucket_index = g,
                                      .payload_bytes = bucket.bytes},
                        trailer_.data());
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst + bucket.bytes, trailer_.data(), kBucketTrailerBytes,
                                         cudaMemcpyHostToDevice, stream_),
                         "bucket ", g);
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_), "bucket ", g);
    const auto* words = reinterpret_cast<const uint64_t*>(guard_host_.data());
    for (size_t k = 0; k < slot_sources_.size(); ++k) guard_.Record(slot_sources_[k], words[k]);
    return NonFiniteStatus(guard_, input, g);
  }

  static constexpr uint32_t kNoSlot = ~uint32_t{0};

  const int device_;
  const cudaStream_t stream_;
  DeviceBuffer slots_[2];
  size_t slot_bytes_ = 0;
  PinnedBuffer host_[2];
  DeviceBuffer scratch_;
  DeviceBuffer zeros_;
  DeviceBuffer digests_;
  DeviceBuffer table_scratch_;
  DeviceBuffer fp8_scratch_;         // row segments
  PinnedBuffer fp8_host_;
  DeviceBuffer fp8_params_scratch_;  // the batch launch's parameter table
  std::vector<Fp8QuantizeParams> fp8_params_;
  PinnedBuffer trailer_;
  DeviceBuffer guard_words_;
  PinnedBuffer guard_host_;
  std::vector<CopyEntry> table_;
  std::vector<Fp8Launch> fp8_;
  FiniteGuard guard_;               // host segments' findings, then the device's
  std::vector<uint32_t> slot_of_;   // source -> guard slot of this bucket
  std::vector<uint32_t> slot_sources_;
  std::vector<const Segment*> host_segments_;  // this bucket's, packed on the CPU
  // Last: destroyed first, so its work is done before the buffers are freed.
  CudaStream owned_stream_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<BucketPacker>> NewCudaBucketPacker(int device) {
  ASSIGN_OR_RETURN(CudaStream stream, CudaStream::Create(device, "GPU packer"));
  auto packer = std::make_unique<CudaBucketPacker>(std::move(stream));
  RETURN_IF_ERROR(packer->Init());
  return std::unique_ptr<BucketPacker>(std::move(packer));
}

}  // namespace weightcast
