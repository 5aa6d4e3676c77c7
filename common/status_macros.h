// Error-propagation macros for absl::Status / absl::StatusOr.
//
// Abseil 20220623 (Debian 12) ships no public RETURN_IF_ERROR; this is the one
// definition the project uses.
//
//   RETURN_IF_ERROR(DoThing());
//   ASSIGN_OR_RETURN(auto value, ComputeValue());
#ifndef WEIGHTCAST_COMMON_STATUS_MACROS_H_
#define WEIGHTCAST_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define WC_CONCAT_INNER_(a, b) a##b
#define WC_CONCAT_(a, b) WC_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                           \
  do {                                                  \
    ::absl::Status wc_status_ = (expr);                 \
    if (!wc_status_.ok()) return wc_status_;            \
  } while (0)

#define WC_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  WC_ASSIGN_OR_RETURN_IMPL_(WC_CONCAT_(wc_statusor_, __LINE__), lhs, expr)

#endif  // WEIGHTCAST_COMMON_STATUS_MACROS_H_
