// What the sender's and the receiver's telemetry share: the prometheus-cpp
// types they hold, and the buckets of every update-duration histogram.
#ifndef WEIGHTCAST_OPS_METRICS_H_
#define WEIGHTCAST_OPS_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace weightcast {

// Seconds: a small model over loopback takes 0.1 s, a large one minutes.
inline const prometheus::Histogram::BucketBoundaries kUpdateSecondsBuckets = {
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};

}  // namespace weightcast

#endif  // WEIGHTCAST_OPS_METRICS_H_
