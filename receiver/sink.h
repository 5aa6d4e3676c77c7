// Sink: where a receiver puts the tensors of one version.
//
// Contract, per version: SetWriteDevice, Begin once, then per bucket its
// Write calls (each tensor's bytes arrive as segments, in bucket order, each
// byte exactly once) and one EndBucket, then Prepare, then exactly one of
// Commit or Abort (Abort also at any point before). Prepare runs before the
// group votes: everything that can fail (a missing byte, a full disk, an
// index or config to write) fails there, so this rank votes no. Commit runs
// after a yes and should only make the prepared version visible. A sink
// must not expose anything of a version before Commit returns OK (a
// checkpoint sink writes into a temporary directory; an engine sink stages,
// or loads between its own begin and finalize). Calls never overlap, but Write may come from a worker thread
// of the receiver (buckets are consumed while the next one arrives).
#ifndef WEIGHTCAST_RECEIVER_SINK_H_
#define WEIGHTCAST_RECEIVER_SINK_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "protocol/wire_format.h"

namespace weightcast {

class Sink {
 public:
  virtual ~Sink() = default;
  // `manifest` stays valid until Commit/Abort returns.
  [[nodiscard]] virtual absl::Status Begin(const GlobalManifest& manifest) = 0;
  // True when Write may be given device memory: with a device transport
  // the receiver then hands over the verified GPU buffer itself instead of
  // a host copy.
  [[nodiscard]] virtual bool TakesDeviceMemory() const { return false; }
  // Where the `data` of this version's Writes lives: -1 host memory, else
  // the CUDA device whose memory it is (only for a sink that
  // TakesDeviceMemory(), on a device transport). Called before Begin.
  virtual void SetWriteDevice(int device) {}
  // Bytes [offset, offset + bytes) of manifest tensor `tensor`. `data`
  // stays valid until the bucket's EndBucket returns, so a sink may queue
  // asynchronous copies from it and wait for them once per bucket.
  [[nodiscard]] virtual absl::Status Write(uint32_t tensor, uint64_t offset,
                                           const std::byte* data, uint64_t bytes) = 0;
  // Every Write of the current bucket has been made; the sink must be done
  // reading their `data` when this returns (the buffer is reused).
  [[nodiscard]] virtual absl::Status EndBucket() { return absl::OkStatus(); }
  // Every byte arrived: does whatever can fail short of publishing.
  [[nodiscard]] virtual absl::Status Prepare() { return absl::OkStatus(); }
  // Publishes the version (prepares it first if Prepare was not called);
  // returns where (a path, or a description).
  [[nodiscard]] virtual absl::StatusOr<std::string> Commit() = 0;
  // Discards everything since Begin. Idempotent.
  virtual void Abort() = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_SINK_H_
