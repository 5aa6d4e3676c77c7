// What the sender's and the receiver's telemetry share: the prometheus-cpp
// types they hold, the buckets of every update-duration histogram, and the
// gauges of the GPU data plane's own memory.
#ifndef WEIGHTCAST_OPS_METRICS_H_
#define WEIGHTCAST_OPS_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "kernels/device_memory.h"

namespace weightcast {

// Seconds: a small model over loopback takes 0.1 s, a large one minutes.
inline const prometheus::Histogram::BucketBoundaries kUpdateSecondsBuckets = {
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};

// The GPU data plane's own memory in this process (kernels/device_memory.h:
// bucket slots, kernel scratch, staging; not the CUDA context's or NCCL's)
// as weightcast_gpu_memory_bytes, weightcast_gpu_memory_peak_bytes and
// weightcast_pinned_memory_peak_bytes. Refresh() before a scrape.
class DataPlaneMemoryGauges {
 public:
  explicit DataPlaneMemoryGauges(prometheus::Registry& r)
      : now_(&prometheus::BuildGauge()
                  .Name("weightcast_gpu_memory_bytes")
                  .Help("GPU memory the data plane holds (bucket slots, scratch, staging)")
                  .Register(r)
                  .Add({})),
        peak_(&prometheus::BuildGauge()
                   .Name("weightcast_gpu_memory_peak_bytes")
                   .Help("The most GPU memory the data plane held since it started")
                   .Register(r)
                   .Add({})),
        pinned_peak_(&prometheus::BuildGauge()
                          .Name("weightcast_pinned_memory_peak_bytes")
                          .Help("The most pinned host memory the data plane held")
                          .Register(r)
                          .Add({})) {}

  void Refresh() {
    const DeviceMemoryUse use = CurrentDeviceMemoryUse();
    now_->Set(static_cast<double>(use.device_bytes));
    peak_->Set(static_cast<double>(use.device_peak_bytes));
    pinned_peak_->Set(static_cast<double>(use.pinned_peak_bytes));
  }

 private:
  prometheus::Gauge* now_;
  prometheus::Gauge* peak_;
  prometheus::Gauge* pinned_peak_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_OPS_METRICS_H_
