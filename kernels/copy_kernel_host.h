// The copy-table kernel run on the CPU: the GPU kernel's own thread code
// (kernels/copy_kernel.h) executed tile by tile and thread by thread, for
// the host twin's LaunchCopyTable and for copy_kernel_test, which compares
// it with ExecuteCopyTableOnHost (the table's semantics) on machines
// without a GPU.
#ifndef WEIGHTCAST_KERNELS_COPY_KERNEL_HOST_H_
#define WEIGHTCAST_KERNELS_COPY_KERNEL_HOST_H_

#include <cstddef>

#include "kernels/copy_table.h"

namespace weightcast {

// Executes entries[0..n) as LaunchCopyTable's kernel does (host addresses);
// `guard`, when given, holds the words the entries' guard_slot index.
// False, having done nothing, for a table LaunchCopyTable refuses
// (IndexCopyTable).
[[nodiscard]] bool RunCopyKernelOnHost(const CopyEntry* entries, size_t n,
                                       unsigned long long* guard = nullptr);

}  // namespace weightcast

#endif  // WEIGHTCAST_KERNELS_COPY_KERNEL_HOST_H_
