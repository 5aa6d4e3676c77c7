// Writes the binary seed inputs of the fuzzers from the real encoders, so
// the seeds are what peers and trainers really send:
//   bazel run //fuzz:write_seeds -- $PWD/fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "protocol/bucket_plan.h"
#include "protocol/group.h"
#include "protocol/wire_format.h"

using namespace weightcast;

namespace {

void Write(const std::filesystem::path& path, const void* data, size_t size) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary).write(static_cast<const char*>(data), size);
}
void Write(const std::filesystem::path& path, const std::string& s) {
  Write(path, s.data(), s.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: write_seeds CORPUS_DIR\n");
    return 2;
  }
  const std::filesystem::path root = argv[1];
  const std::vector<OutputTensor> outs = {
      CopyOf(TensorSpec{"model.embed_tokens.weight", DType::kBF16, {10, 7}}, 0),
      CopyOf(TensorSpec{"model.norm.weight", DType::kF32, {7}}, 1),
      CopyOf(TensorSpec{"lm_head.weight", DType::kBF16, {10, 700}}, 2)};
  for (uint32_t rank = 0; rank < 2; ++rank) {
    absl::StatusOr<BucketPlan> plan = PlanBuckets(outs, 8192, 0);
    if (!plan.ok()) return 1;
    Write(root / "wire_fuzzer" / ("manifest_rank" + std::to_string(rank)),
          EncodeSenderManifest(MakeSenderManifest(3, rank, 2, outs, *plan,
                                                  rank == 0 ? "{\"model_type\":\"qwen3\"}" : "")));
  }
  const auto header = EncodeFrameHeader(
      {.weight_version = 3, .sender_rank = 1, .payload_bytes = 1234, .payload_checksum = 42});
  Write(root / "wire_fuzzer" / "frame_header", header.data(), header.size());
  std::vector<std::byte> trailer(kBucketTrailerBytes);
  EncodeBucketTrailer({.checksum = 7, .weight_version = 3, .bucket_index = 2, .payload_bytes = 64},
                      trailer.data());
  Write(root / "wire_fuzzer" / "bucket_trailer", trailer.data(), trailer.size());

  std::vector<std::byte> a(2 * 3 * 2), b(4 * 4);
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::byte(i);
  const HostSource sources[] = {{TensorSpec{"w", DType::kBF16, {2, 3}}, a.data()},
                                {TensorSpec{"n", DType::kF32, {4}}, b.data()}};
  const std::filesystem::path st = root / "safetensors_fuzzer" / "two_tensors";
  std::filesystem::create_directories(st.parent_path());
  if (!WriteSafetensors(st, sources, {{"format", "pt"}}).ok()) return 1;

  Write(root / "rendezvous_fuzzer" / "announcement",
        EncodeAnnouncement({.seq = 4, .generation = 2, .weight_version = 9, .num_senders = 2,
                            .world_size = 4, .transport = "gloo", .new_model = true}));
  Write(root / "rendezvous_fuzzer" / "publish_ok", EncodePublishReport(9, ""));
  Write(root / "rendezvous_fuzzer" / "publish_error",
        EncodePublishReport(8, "rank 3: LATEST: No space left on device"));
  return 0;
}
