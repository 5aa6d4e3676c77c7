// Sink: where a receiver puts the tensors of one version.
//
// Contract, per version: Begin once, then Write calls (each tensor's bytes
// arrive as segments, in bucket order, each byte exactly once), then exactly
// one of Commit or Abort. A sink must not expose anything of a version
// before Commit returns OK (a checkpoint sink writes into a temporary
// directory; an engine sink stages, or loads between its own begin and
// finalize). Calls never overlap, but Write may come from a worker thread
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
  // a host copy. Such a sink must be done with `data` when Write returns.
  [[nodiscard]] virtual bool TakesDeviceMemory() const { return false; }
  // Bytes [offset, offset + bytes) of manifest tensor `tensor`.
  [[nodiscard]] virtual absl::Status Write(uint32_t tensor, uint64_t offset,
                                           const std::byte* data, uint64_t bytes) = 0;
  // Publishes the version; returns where (a path, or a description).
  [[nodiscard]] virtual absl::StatusOr<std::string> Commit() = 0;
  // Discards everything since Begin. Idempotent.
  virtual void Abort() = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_RECEIVER_SINK_H_
