// The benchmarks' clock: steady seconds, and the best of several runs.
#ifndef WEIGHTCAST_BENCH_TIMING_H_
#define WEIGHTCAST_BENCH_TIMING_H_

#include <algorithm>
#include <chrono>

namespace weightcast::bench {

inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best of `reps` runs of fn(), seconds.
template <typename F>
double Best(int reps, F fn) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const double t0 = Now();
    fn();
    best = std::min(best, Now() - t0);
  }
  return best;
}

}  // namespace weightcast::bench

#endif  // WEIGHTCAST_BENCH_TIMING_H_
