// The GPU BucketPacker (sender/bucket_packer.h) for device transports.
//
// Per bucket, on one CUDA stream of its own and with one host
// synchronisation (for the checksum) per bucket, never per tensor:
// - outputs whose sources are in GPU memory (CUDA IPC): one copy-table
//   launch for every plain segment and the padding (kernels/pack_cuda.h,
//   expert expansion/fusion and vLLM slicing are addressing), one FP8
//   quantize launch per FP8 segment (kernels/fp8_cuda.h);
// - outputs whose sources are in host memory (shm, checkpoint files): the CPU
//   packer into a pinned twin of the slot, then one host-to-device copy per
//   run of such segments;
// - the checksum on the GPU (kernels/checksum_gpu.h), then the trailer;
// - with the non-finite guard on, the copy-table and FP8 kernels check what
//   they read (one guard word per source of the bucket, atomicMin), the CPU
//   packer checks host segments, and the words come back with the checksum's
//   synchronisation: no extra pass over the bytes, no extra wait.
// Device memory: two slots of the largest bucket plus small scratch (copy
// tables, FP8 row segments, checksum digests); host: two pinned slots, only
// when some source is in host memory.
#ifndef WEIGHTCAST_SENDER_CUDA_BUCKET_PACKER_H_
#define WEIGHTCAST_SENDER_CUDA_BUCKET_PACKER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "sender/bucket_packer.h"

namespace weightcast {

// A packer on CUDA device `device`. INTERNAL when the device cannot be used
// (no GPU, no driver), naming it.
[[nodiscard]] absl::StatusOr<std::unique_ptr<BucketPacker>> NewCudaBucketPacker(int device);

}  // namespace weightcast

#endif  // WEIGHTCAST_SENDER_CUDA_BUCKET_PACKER_H_
