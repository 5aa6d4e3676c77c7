// ParameterSink: writes each version straight into an inference engine's
// parameters, given as a name -> (address, bytes) map: GPU memory (device
// to device from the verified landing slot on NCCL groups, host to device
// from the received bucket on gloo), or host memory for a CPU engine. The
// targets may live in this process or be another process's allocations
// opened through CUDA IPC (kernels/cuda_ipc.h).
//
// An optional receiver-side layout (receiver/layout_builder.h; e.g. vLLM's
// FusedMoE w13/w2 for this rank's TP/EP slice) names the targets instead of
// the wire: each output is assembled in its target as its sources arrive,
// by copy tables (kernels/pack_table.h: BuildPackTableForPiece), with no
// intermediate copy of the output. Copies of one bucket are queued and run
// as one copy-table launch at EndBucket, one wait per bucket.
//
// Every buffer a version needs (the shadow, the hold arena for split
// sources, host-bucket staging, the copy tables' scratch) is sized from the
// manifest at Begin: on a GPU an allocation while buckets arrive would wait
// for the device.
//
// Two modes, because "all of a version or none of it" costs memory:
// - kStaged: the version is assembled in one shadow arena and Commit
//   copies it into the parameters in one launch. Nothing of an aborted
//   version reaches a parameter. Memory: one more copy of the targets, made
//   at the first Begin and kept (an engine must leave that memory free for
//   every update anyway, and cudaFree would synchronise its whole device
//   after each one).
// - kInPlace: outputs are written into the parameters as they arrive. The
//   engine must hold off serving between its own begin and finalize (the
//   reload bracket of docs/FORMATS.md); dirty() says whether an aborted
//   version wrote into any parameter since the last commit.
// Every output of the version must have a target of exactly its size, and
// every target must be written by the version (else Begin or Commit fails,
// naming the tensor).
#ifndef WEIGHTCAST_RECEIVER_PARAMETER_SINK_H_
#define WEIGHTCAST_RECEIVER_PARAMETER_SINK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "common/output_tensor.h"
#include "kernels/copy_table.h"
#include "receiver/hold_plan.h"
#include "receiver/layout_builder.h"
#include "receiver/parameter_copier.h"
#include "receiver/sink.h"

namespace weightcast {

struct ParameterTarget {
  void* data = nullptr;  // on the sink's device, or host memory
  uint64_t bytes = 0;
};

class ParameterSink final : public Sink {
 public:
  enum class Mode { kStaged, kInPlace };

  // Targets on CUDA device `device`; the copier is made at the first Begin
  // (FAILED_PRECONDITION there without such a device).
  ParameterSink(int device, absl::flat_hash_map<std::string, ParameterTarget> targets, Mode mode,
                LayoutBuilder layout = {});
  // Any copier, e.g. NewHostParameterCopier() for host-memory targets.
  ParameterSink(std::unique_ptr<ParameterCopier> copier,
                absl::flat_hash_map<std::string, ParameterTarget> targets, Mode mode,
                LayoutBuilder layout = {});
  ~ParameterSink() override;

  bool TakesDeviceMemory() const override { return device_ >= 0; }
  void SetWriteDevice(int device) override { write_device_ = device; }
  absl::Status Begin(const GlobalManifest& manifest) override;
  absl::Status Write(uint32_t tensor, uint64_t offset, const std::byte* data,
                     uint64_t bytes) override;
  absl::Status EndBucket() override;
  absl::Status Prepare() override;
  absl::StatusOr<std::string> Commit() override;
  void Abort() override;

  // kInPlace: whether an aborted version wrote into any parameter since the
  // last committed one (the parameters then hold a mix until a commit).
  [[nodiscard]] bool dirty() const { return dirty_; }

 private:
  absl::Status Prepare(const GlobalManifest& manifest);
  // Where output o is assembled: its shadow (kStaged) or its parameter.
  std::byte* Destination(size_t o) const;
  // Source `s` is complete at `data` (copier memory): queue its pieces.
  absl::Status SourceComplete(uint32_t s, const std::byte* data);
  void Reset();

  const int device_;  // -1: host memory
  std::unique_ptr<ParameterCopier> copier_;
  const absl::flat_hash_map<std::string, ParameterTarget> targets_;
  const Mode mode_;
  const LayoutBuilder layout_;
  int write_device_ = -1;  // where Write's data lives: -1 host

  const GlobalManifest* manifest_ = nullptr;
  std::vector<OutputTensor> outputs_;
  std::vector<const ParameterTarget*> target_of_;  // output -> its target
  std::vector<int64_t> direct_;                    // received -> output it is whole, or -1
  // A piece of an assembled output, and the output element it starts at.
  struct PieceRef {
    uint32_t output = 0;
    uint32_t piece = 0;
    uint64_t start = 0;
  };
  // received -> the pieces of assembled outputs that read it
  std::vector<std::vector<PieceRef>> dependents_;
  std::vector<uint64_t> arrived_;                  // received -> bytes so far
  std::vector<uint64_t> written_;                  // output -> bytes queued into it
  // Sources of assembled outputs that arrive split across buckets, held in
  // one arena laid out at Begin (receiver/hold_plan.h) and kept across
  // versions while large enough: nothing is allocated while buckets arrive.
  HoldPlan holds_;
  CopierArena hold_;
  CopierArena shadow_;  // kStaged: every output, at shadow_offset_
  std::vector<uint64_t> shadow_offset_;
  // Host buckets staged into device memory (GPU targets on gloo groups).
  CopierArena staging_;
  uint64_t staging_used_ = 0;
  std::vector<CopyEntry> table_;  // the current bucket's copies
  bool dirty_ = false;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_PARAMETER_SINK_H_
