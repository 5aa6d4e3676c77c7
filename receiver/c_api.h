/* weightcast receiver, C API: embed an inference rank of a weightcast group
 * in any process (an inference engine's worker, a Python adapter through
 * ctypes). Each version is delivered as begin, tensor..., then commit or
 * abort; nothing is a version until commit.
 *
 *   char err[512];
 *   wc_receiver* r = wc_receiver_create("10.0.0.1:29501", token, 8, 120.0,
 *                                       "127.0.0.1", err, sizeof err);
 *   uint64_t v;
 *   int rc = wc_receiver_next(r, &callbacks, 5.0, &v, err, sizeof err);
 *   ...
 *   wc_receiver_destroy(r);
 *
 * On a GPU (NCCL groups), wc_receiver_open takes the device; tensors can be
 * handed to the callback in device memory (wc_receiver_options.device_tensors),
 * or copied straight into the engine's parameters, given as a name -> device
 * pointer map or as CUDA IPC handles from another process (wc_targets,
 * wc_receiver_next_into):
 *
 *   wc_targets* t = wc_targets_create(0, WC_TARGETS_STAGED, err, sizeof err);
 *   wc_targets_add(t, "model.layers.0.mlp.down_proj.weight", ptr, bytes, err, sizeof err);
 *   rc = wc_receiver_next_into(r, t, &bracket, 5.0, &v, &dirty, err, sizeof err);
 *
 * Threading: one thread calls wc_receiver_next / wc_receiver_next_into;
 * wc_receiver_stop may be called from any thread; a wc_targets is not
 * changed (add, layout, destroy) while wc_receiver_next_into uses it. Callbacks run on a thread
 * of the receiver, one at a time; tensor data is valid only during the
 * tensor callback. */
#ifndef WEIGHTCAST_RECEIVER_C_API_H_
#define WEIGHTCAST_RECEIVER_C_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wc_receiver wc_receiver;

/* Bumped when a struct below changes; wc_receiver_api_version() returns it. */
#define WC_RECEIVER_API_VERSION 2

typedef struct wc_tensor {
  const char* name;
  const char* dtype; /* safetensors name: "BF16", "F32", "F8_E4M3", ... */
  int32_t ndim;
  const int64_t* shape;
  const void* data;
  uint64_t nbytes;
  /* -1: data is host memory. Else the CUDA device whose memory data is
   * (device_tensors on an NCCL group); the callback must have finished
   * reading it (synchronised its stream) when it returns. */
  int32_t device;
} wc_tensor;

/* Callbacks return 0 for success; anything else makes this rank vote
 * against the version (begin, tensor) or reports a failed publish (commit). */
typedef struct wc_callbacks {
  void* user;
  int (*begin)(void* user, uint64_t version, uint64_t num_tensors, const char* config_json);
  int (*tensor)(void* user, const wc_tensor* tensor);
  int (*commit)(void* user, uint64_t version);
  void (*abort)(void* user, uint64_t version);
} wc_callbacks;

/* Results of wc_receiver_next. */
#define WC_COMMITTED 1
#define WC_NO_UPDATE 0   /* nothing announced within wait_s: call again */
#define WC_ABORTED (-1)  /* the group aborted this version; err says why */
#define WC_ERROR (-2)    /* this rank failed (err); the next call re-joins */
#define WC_STOPPED (-3)

typedef struct wc_receiver_options {
  const char* rendezvous; /* host:port of sender 0's rendezvous */
  const char* token;      /* the group token (required) */
  int32_t rank;           /* this inference rank's global rank (>= number of senders) */
  double timeout_s;       /* per collective and rendezvous wait; > 0 */
  const char* bind_host;  /* address peers reach this rank at; NULL: 127.0.0.1 */
  int32_t cuda_device;    /* GPU of the receive buffers on NCCL groups (>= 0) */
  int32_t device_tensors; /* nonzero: on NCCL groups tensors stay on the GPU */
} wc_receiver_options;

int wc_receiver_api_version(void);
/* Defaults: token NULL (must be set), timeout 120 s, bind 127.0.0.1, device 0, host tensors. */
void wc_receiver_options_init(wc_receiver_options* options);

/* NULL on error (err filled). wc_receiver_create is wc_receiver_open with
 * the defaults for the fields it does not take. */
wc_receiver* wc_receiver_open(const wc_receiver_options* options, char* err, size_t err_len);
wc_receiver* wc_receiver_create(const char* rendezvous, const char* token, int rank,
                                double timeout_s, const char* bind_host, char* err,
                                size_t err_len);
int wc_receiver_next(wc_receiver* r, const wc_callbacks* cb, double wait_s, uint64_t* version,
                     char* err, size_t err_len);

/* Target parameters for wc_receiver_next_into, on one GPU or (cuda_device
 * -1) in host memory. Every tensor of a version must have a target of
 * exactly its byte size, and every target must be written by it, else this
 * rank votes against the version (err names the tensor). With a layout
 * (wc_targets_set_vllm_layout) the targets are the layout's tensors
 * (vLLM's w13_weight, w2_weight, ... of this rank), assembled in place from
 * the wire's tensors as they arrive.
 * WC_TARGETS_STAGED: each version lands in device shadows and is copied
 *   into the parameters only once the group committed: an aborted version
 *   never touches them (costs one more copy of the targets' memory).
 * WC_TARGETS_IN_PLACE: tensors are written into the parameters as they
 *   arrive; the engine must not serve between begin and commit/abort, and
 *   after an abort *dirty says whether any parameter was overwritten. */
typedef struct wc_targets wc_targets;
#define WC_TARGETS_STAGED 0
#define WC_TARGETS_IN_PLACE 1

/* The functions below return 0 on success, -1 with err filled. */
wc_targets* wc_targets_create(int cuda_device, int mode, char* err, size_t err_len);
/* A parameter of this process: `nbytes` bytes of device memory at `data`. */
int wc_targets_add(wc_targets* t, const char* name, void* data, uint64_t nbytes, char* err,
                   size_t err_len);
/* A parameter of another process: bytes [offset, offset + nbytes) of the
 * allocation (allocation_bytes long) whose cudaIpcMemHandle_t is `handle`
 * (handle_len must be 64). Each allocation is mapped once, here. */
int wc_targets_add_ipc(wc_targets* t, const char* name, const void* handle, size_t handle_len,
                       uint64_t allocation_bytes, uint64_t offset, uint64_t nbytes, char* err,
                       size_t err_len);
/* The vLLM FusedMoE layout of tensor-parallel rank tp_rank of tp_size and
 * expert-parallel rank ep_rank of ep_size; `family` NULL or "": the
 * version's config.json model_type. */
int wc_targets_set_vllm_layout(wc_targets* t, const char* family, int tp_rank, int tp_size,
                               int ep_rank, int ep_size, char* err, size_t err_len);
uint64_t wc_targets_count(const wc_targets* t);
void wc_targets_destroy(wc_targets* t);

/* Like wc_receiver_next, but the tensors go into `targets`. `bracket` may
 * be NULL; its begin, commit and abort are called as in wc_receiver_next
 * (commit after the parameters hold the version: run the engine's
 * post-load step there), its tensor callback is not used. `dirty` may be
 * NULL. GPU targets must be on the receiver's cuda_device: on NCCL groups
 * they are written device to device from the verified receive buffer (one
 * copy-table launch per bucket), on gloo groups copied up from host memory.
 * Host targets take host memory on any group. */
int wc_receiver_next_into(wc_receiver* r, wc_targets* targets, const wc_callbacks* bracket,
                          double wait_s, uint64_t* version, int* dirty, char* err,
                          size_t err_len);
void wc_receiver_stop(wc_receiver* r);
void wc_receiver_destroy(wc_receiver* r);

#ifdef __cplusplus
}
#endif

#endif /* WEIGHTCAST_RECEIVER_C_API_H_ */
