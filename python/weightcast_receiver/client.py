"""ctypes binding of the receiver's C API, and EngineAdapter, which applies
each version to an inference engine inside one begin/finish bracket.

The bracket is the point (FORMATS.md §4): an engine's post-load step
(vLLM's process_weights_after_loading: FP8 re-layout, w13 swaps, MLA
absorption) must run exactly once per version, after the last tensor, never
per chunk. EngineAdapter calls, per version:
    engine.begin_update(version, config_json)     once, before any tensor
    engine.load_weights([(name, array), ...])     per chunk of tensors
    engine.finish_update(version)                 once, after the group committed
    engine.abort_update(version)                  instead, if the group aborted
"""

from __future__ import annotations

import ctypes
import enum
import os
from dataclasses import dataclass

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_LIB = os.path.join(_REPO, "bazel-bin", "receiver", "libweightcast_receiver.so")

# Raw-byte holders per safetensors dtype (BF16 and FP8 as their bit patterns).
_NUMPY = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32,
          "I64": np.int64, "F16": np.float16, "BF16": np.uint16, "F32": np.float32,
          "F64": np.float64, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8}


class _Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_char_p), ("ndim", ctypes.c_int32),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("data", ctypes.c_void_p),
                ("nbytes", ctypes.c_uint64)]


_BEGIN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64,
                          ctypes.c_char_p)
_TENSOR = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(_Tensor))
_COMMIT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64)
_ABORT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64)


class _Callbacks(ctypes.Structure):
    _fields_ = [("user", ctypes.c_void_p), ("begin", _BEGIN), ("tensor", _TENSOR),
                ("commit", _COMMIT), ("abort", _ABORT)]


class ReceiveStatus(enum.IntEnum):
    COMMITTED = 1
    NO_UPDATE = 0
    ABORTED = -1
    ERROR = -2
    STOPPED = -3


@dataclass
class ReceiveResult:
    status: ReceiveStatus
    version: int
    message: str


def _load(lib_path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(lib_path)
    lib.wc_receiver_create.restype = ctypes.c_void_p
    lib.wc_receiver_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                       ctypes.c_double, ctypes.c_char_p, ctypes.c_char_p,
                                       ctypes.c_size_t]
    lib.wc_receiver_next.restype = ctypes.c_int
    lib.wc_receiver_next.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Callbacks), ctypes.c_double,
                                     ctypes.POINTER(ctypes.c_uint64), ctypes.c_char_p,
                                     ctypes.c_size_t]
    lib.wc_receiver_stop.argtypes = [ctypes.c_void_p]
    lib.wc_receiver_destroy.argtypes = [ctypes.c_void_p]
    return lib


class Receiver:
    """One inference rank. `next(...)` waits for and runs one update."""

    def __init__(self, rendezvous: str, rank: int, token: str = "", timeout_s: float = 120,
                 bind_host: str = "127.0.0.1", lib_path: str | None = None):
        self._lib = _load(lib_path or os.environ.get("WEIGHTCAST_RECEIVER_LIB", DEFAULT_LIB))
        err = ctypes.create_string_buffer(1024)
        self._handle = self._lib.wc_receiver_create(rendezvous.encode(), token.encode(), rank,
                                                    timeout_s, bind_host.encode(), err, len(err))
        if not self._handle:
            raise RuntimeError(f"weightcast receiver rank {rank}: {err.value.decode()}")

    def next(self, begin, tensor, commit, abort, wait_s: float = 5.0) -> ReceiveResult:
        """begin(version, num_tensors, config_json); tensor(name, dtype, shape,
        numpy array of the raw bytes, valid during the call only);
        commit(version); abort(version). Exceptions in callbacks make this
        rank vote against the version."""

        def guard(fn):
            def call(*args):
                try:
                    fn(*args)
                    return 0
                except Exception:  # noqa: BLE001 - reported as a failed vote
                    return 1
            return call

        def on_tensor(_user, t):
            t = t.contents
            dtype = t.dtype.decode()
            shape = tuple(t.shape[i] for i in range(t.ndim))
            holder = _NUMPY[dtype]
            count = t.nbytes // np.dtype(holder).itemsize
            if count:
                buf = (ctypes.c_char * t.nbytes).from_address(t.data)
                arr = np.frombuffer(buf, dtype=holder, count=count).reshape(shape)
            else:
                arr = np.zeros(shape, dtype=holder)
            return guard(tensor)(t.name.decode(), dtype, shape, arr)

        cb = _Callbacks(None,
                        _BEGIN(lambda _u, v, n, cfg: guard(begin)(v, n, cfg.decode())),
                        _TENSOR(on_tensor),
                        _COMMIT(lambda _u, v: guard(commit)(v)),
                        _ABORT(lambda _u, v: abort(v)))
        version = ctypes.c_uint64(0)
        err = ctypes.create_string_buffer(4096)
        rc = self._lib.wc_receiver_next(self._handle, ctypes.byref(cb), wait_s,
                                        ctypes.byref(version), err, len(err))
        return ReceiveResult(ReceiveStatus(rc), version.value, err.value.decode())

    def stop(self) -> None:
        self._lib.wc_receiver_stop(self._handle)

    def close(self) -> None:
        if self._handle:
            self._lib.wc_receiver_destroy(self._handle)
            self._handle = None


class EngineAdapter:
    """Feeds each version to `engine` in chunks of about `chunk_bytes`,
    bracketed once per version (see the module docstring)."""

    def __init__(self, receiver: Receiver, engine, chunk_bytes: int = 256 << 20):
        self.receiver = receiver
        self.engine = engine
        self.chunk_bytes = chunk_bytes

    def poll(self, wait_s: float = 5.0) -> ReceiveResult:
        chunk: list = []
        size = [0]

        def flush():
            if chunk:
                self.engine.load_weights(list(chunk))
                chunk.clear()
                size[0] = 0

        def on_tensor(name, dtype, shape, arr):
            chunk.append((name, dtype, arr.copy()))  # the buffer is reused after the call
            size[0] += arr.nbytes
            if size[0] >= self.chunk_bytes:
                flush()

        def on_commit(version):
            flush()
            self.engine.finish_update(version)

        return self.receiver.next(
            begin=lambda v, n, cfg: self.engine.begin_update(v, cfg),
            tensor=on_tensor,
            commit=on_commit,
            abort=lambda v: (chunk.clear(), self.engine.abort_update(v)),
            wait_s=wait_s)
