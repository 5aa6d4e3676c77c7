// What a fuzzer asserts besides "no crash": a property that must hold for
// every input, checked with FUZZ_CHECK (aborts, so libFuzzer and the replay
// test both report the input).
#ifndef WEIGHTCAST_FUZZ_FUZZ_CHECK_H_
#define WEIGHTCAST_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                        \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                      \
      std::abort();                                                             \
    }                                                                           \
  } while (0)

#endif  // WEIGHTCAST_FUZZ_FUZZ_CHECK_H_
