// The Python interpreter C++ tests use as an independent oracle (the
// safetensors package, ml_dtypes). scripts/test exports WEIGHTCAST_PYTHON
// (.bazelrc passes it to tests); without it the Python checks skip, with it
// a missing package is a failure, not a skip.
#ifndef WEIGHTCAST_TOOLS_TESTING_PYTHON_H_
#define WEIGHTCAST_TOOLS_TESTING_PYTHON_H_

#include <cstdlib>
#include <string>

namespace weightcast::testing {

// The interpreter path, or "" when the Python oracles are not configured.
inline std::string Python() {
  const char* p = std::getenv("WEIGHTCAST_PYTHON");
  return p == nullptr ? "" : p;
}

// Runs `python args` through the shell; returns its exit status.
inline int RunPython(const std::string& args) {
  return std::system((Python() + " " + args).c_str());
}

}  // namespace weightcast::testing

#define WC_REQUIRE_PYTHON(modules)                                                 \
  do {                                                                             \
    if (::weightcast::testing::Python().empty()) {                                 \
      GTEST_SKIP() << "WEIGHTCAST_PYTHON not set (scripts/test sets it)";          \
    }                                                                              \
    ASSERT_EQ(::weightcast::testing::RunPython("-c 'import " modules "'"), 0)      \
        << "WEIGHTCAST_PYTHON lacks " modules;                                     \
  } while (0)

#endif  // WEIGHTCAST_TOOLS_TESTING_PYTHON_H_
