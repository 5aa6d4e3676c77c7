// The release every binary and the Python package report (--version,
// weightcast.__version__); bump them together.
#ifndef WEIGHTCAST_COMMON_VERSION_H_
#define WEIGHTCAST_COMMON_VERSION_H_

namespace weightcast {

inline constexpr char kWeightcastVersion[] = "0.1.0";

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_VERSION_H_
