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
 * Threading: one thread calls wc_receiver_next; wc_receiver_stop may be
 * called from any thread. Callbacks run on the calling thread; tensor data
 * is valid only during the tensor callback. */
#ifndef WEIGHTCAST_RECEIVER_C_API_H_
#define WEIGHTCAST_RECEIVER_C_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wc_receiver wc_receiver;

typedef struct wc_tensor {
  const char* name;
  const char* dtype; /* safetensors name: "BF16", "F32", "F8_E4M3", ... */
  int32_t ndim;
  const int64_t* shape;
  const void* data;
  uint64_t nbytes;
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

/* NULL on error (err filled). */
wc_receiver* wc_receiver_create(const char* rendezvous, const char* token, int rank,
                                double timeout_s, const char* bind_host, char* err,
                                size_t err_len);
int wc_receiver_next(wc_receiver* r, const wc_callbacks* cb, double wait_s, uint64_t* version,
                     char* err, size_t err_len);
void wc_receiver_stop(wc_receiver* r);
void wc_receiver_destroy(wc_receiver* r);

#ifdef __cplusplus
}
#endif

#endif /* WEIGHTCAST_RECEIVER_C_API_H_ */
