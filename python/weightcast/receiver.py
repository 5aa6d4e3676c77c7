"""ctypes binding of the receiver's C API, and EngineAdapter, which applies
each version to an inference engine inside one begin/finish bracket.

Three ways to take a version, all with the same bracket:
- ``Receiver.next``: tensors handed to a callback, as numpy arrays of host
  memory, or (``device_tensors=True`` on an NCCL group) as ``DeviceTensor``s
  that stay on the GPU (``__cuda_array_interface__``, ``.torch()``).
- ``Receiver.next_into``: copied by the library straight into the engine's
  GPU parameters (``ParameterTargets``: data pointers of this process, e.g.
  torch parameters, or CUDA IPC handles from another process), staged (an
  aborted version never touches them) or in place.
- ``EngineAdapter.poll`` / ``poll_into`` wrap these for an engine object.

The bracket is the point (FORMATS.md section 4): an engine's post-load step
(vLLM's process_weights_after_loading: FP8 re-layout, w13 swaps, MLA
absorption) must run exactly once per version, after the last tensor, never
per chunk. EngineAdapter calls, per version:
    engine.begin_update(version, config_json)     once, before any tensor
    engine.load_weights([(name, tensor), ...])    per chunk of torch tensors
    engine.finish_update(version)                 once, after the last chunk
    engine.abort_update(version, dirty)           instead, if it cannot finish
By default nothing reaches the engine before the group committed: the
version is staged (``VersionStager``: one host copy of this rank's tensors,
buffers reused from version to version) and handed over after the vote, so
a version the group votes down never touches the engine. With
``streaming=True`` chunks go to the engine as they arrive (no staged copy);
a version aborted after that leaves the engine ``dirty`` (abort_update says
so) until a good one lands.
"""

from __future__ import annotations

import ctypes
import enum
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from weightcast.errors import ReceiveError
from weightcast.shm import NUMPY_DTYPES as _NUMPY

from weightcast import native as _native

LIB_NAME = _native.RECEIVER_LIB
# In a checkout: what `bazel build //receiver:libweightcast_receiver.so` made.
DEFAULT_LIB = _native.checkout_receiver_library()


def receiver_library(lib_path: str | None = None) -> str:
    """Where libweightcast_receiver.so is: ``lib_path``, else
    $WEIGHTCAST_RECEIVER_LIB, else the copy installed with this package, else
    the checkout's bazel-bin (weightcast.native)."""
    return lib_path or _native.receiver_library()


API_VERSION = 2  # receiver/c_api.h WC_RECEIVER_API_VERSION

TARGETS_STAGED = 0
TARGETS_IN_PLACE = 1


class _Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_char_p), ("ndim", ctypes.c_int32),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("data", ctypes.c_void_p),
                ("nbytes", ctypes.c_uint64), ("device", ctypes.c_int32)]


class _Options(ctypes.Structure):
    _fields_ = [("rendezvous", ctypes.c_char_p), ("token", ctypes.c_char_p),
                ("rank", ctypes.c_int32), ("timeout_s", ctypes.c_double),
                ("bind_host", ctypes.c_char_p), ("cuda_device", ctypes.c_int32),
                ("device_tensors", ctypes.c_int32)]


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
    # next_into, in place: an aborted version overwrote parameters since the
    # last commit (reload before serving).
    dirty: bool = False


@dataclass
class DeviceTensor:
    """A received tensor in GPU memory, valid only during the tensor
    callback: consume it (copy it, or synchronise the stream that read it)
    before returning. Zero-copy views: ``__cuda_array_interface__`` (cupy,
    numba, torch.as_tensor) and ``torch()``."""

    name: str
    dtype: str  # safetensors name
    shape: tuple
    ptr: int
    nbytes: int
    device: int

    @property
    def __cuda_array_interface__(self) -> dict:
        # BF16 and FP8 as their bit patterns (u2, u1), like the numpy arrays.
        return {"shape": self.shape, "typestr": np.dtype(_NUMPY[self.dtype]).str,
                "data": (self.ptr or 0, True), "version": 3, "strides": None}

    def torch(self):
        """A torch tensor of the right dtype over the same device memory."""
        import torch  # noqa: PLC0415 - only where a GPU consumer has it

        from weightcast.cuda_ipc import torch_dtype  # noqa: PLC0415

        want = torch_dtype(self.dtype)
        if self.nbytes == 0:
            return torch.empty(self.shape, dtype=want, device=f"cuda:{self.device}")
        # Through bytes: every torch has uint8 (not every one uint16).
        raw = torch.as_tensor(_RawDeviceBytes(self.ptr, self.nbytes),
                              device=f"cuda:{self.device}")
        return raw.view(want).view(self.shape)


@dataclass
class _RawDeviceBytes:
    ptr: int
    nbytes: int

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": (self.nbytes,), "typestr": "|u1", "data": (self.ptr, True),
                "version": 3, "strides": None}


_LIBS: dict[str, ctypes.CDLL] = {}


def _load(lib_path: str) -> ctypes.CDLL:
    if lib_path in _LIBS:
        return _LIBS[lib_path]
    _native.prepare_receiver_library(lib_path)
    lib = ctypes.CDLL(lib_path)
    lib.wc_receiver_api_version.restype = ctypes.c_int
    if lib.wc_receiver_api_version() != API_VERSION:
        raise RuntimeError(f"{lib_path}: C API version {lib.wc_receiver_api_version()}, "
                           f"this binding speaks {API_VERSION}")
    err_args = [ctypes.c_char_p, ctypes.c_size_t]
    lib.wc_receiver_options_init.argtypes = [ctypes.POINTER(_Options)]
    lib.wc_receiver_open.restype = ctypes.c_void_p
    lib.wc_receiver_open.argtypes = [ctypes.POINTER(_Options), *err_args]
    lib.wc_receiver_next.restype = ctypes.c_int
    lib.wc_receiver_next.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Callbacks), ctypes.c_double,
                                     ctypes.POINTER(ctypes.c_uint64), *err_args]
    lib.wc_receiver_next_into.restype = ctypes.c_int
    lib.wc_receiver_next_into.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.POINTER(_Callbacks), ctypes.c_double,
                                          ctypes.POINTER(ctypes.c_uint64),
                                          ctypes.POINTER(ctypes.c_int), *err_args]
    lib.wc_receiver_stop.argtypes = [ctypes.c_void_p]
    lib.wc_receiver_destroy.argtypes = [ctypes.c_void_p]
    lib.wc_targets_create.restype = ctypes.c_void_p
    lib.wc_targets_create.argtypes = [ctypes.c_int, ctypes.c_int, *err_args]
    lib.wc_targets_add.restype = ctypes.c_int
    lib.wc_targets_add.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                   ctypes.c_uint64, *err_args]
    lib.wc_targets_add_ipc.restype = ctypes.c_int
    lib.wc_targets_add_ipc.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                       ctypes.c_size_t, ctypes.c_uint64, ctypes.c_uint64,
                                       ctypes.c_uint64, *err_args]
    lib.wc_targets_set_vllm_layout.restype = ctypes.c_int
    lib.wc_targets_set_vllm_layout.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                               ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                               *err_args]
    lib.wc_targets_count.restype = ctypes.c_uint64
    lib.wc_targets_count.argtypes = [ctypes.c_void_p]
    lib.wc_targets_destroy.argtypes = [ctypes.c_void_p]
    _LIBS[lib_path] = lib
    return lib


def _guard(fn, errors: list):
    """A Python callback as a C one: an exception becomes a failed vote, and
    its message is kept in ``errors`` for the result."""
    def call(*args):
        try:
            fn(*args)
            return 0
        except Exception as e:  # noqa: BLE001 - reported as a failed vote
            errors.append(f"{type(e).__name__}: {e}")
            return 1
    return call


def _bracket(begin, commit, abort, errors: list) -> _Callbacks:
    none = (lambda *_: None)
    begin, commit, abort = begin or none, commit or none, abort or none
    return _Callbacks(None,
                      _BEGIN(lambda _u, v, n, cfg: _guard(begin, errors)(v, n, cfg.decode())),
                      _TENSOR(lambda _u, _t: 1),
                      _COMMIT(lambda _u, v: _guard(commit, errors)(v)),
                      _ABORT(lambda _u, v: abort(v)))


def _result(rc: int, version: int, message: str, errors: list, dirty: bool = False
            ) -> ReceiveResult:
    """The C call's outcome, with the Python callbacks' own errors first."""
    if errors and rc != ReceiveStatus.COMMITTED:
        message = "; ".join(errors) + (f" ({message})" if message else "")
    return ReceiveResult(ReceiveStatus(rc), version, message, dirty)


class ParameterTargets:
    """The engine's parameters a version is copied into, by name: on one GPU
    (``device`` >= 0) or in host memory (``device=-1``, a CPU engine).
    ``staged=True``: a version is assembled in shadows and reaches the
    parameters only once the group committed (one more copy of their
    memory, during the update); ``False``: in place, between the engine's
    begin and finish. ``vllm_layout(...)``: the targets are vLLM's FusedMoE
    tensors of this rank (w13_weight, w2_weight, scales), assembled from the
    wire's per-expert tensors as they arrive.

        targets = ParameterTargets(device=0)
        targets.add_torch(dict(model.named_parameters()))     # this process
        targets.add_ipc_descriptors(doc)                      # another process's
    """

    def __init__(self, device: int = 0, staged: bool = True, lib_path: str | None = None):
        self._handle = None
        self._keep: dict = {}  # name -> the object whose memory a target is
        self._lib = _load(receiver_library(lib_path))
        self.device = device
        err = ctypes.create_string_buffer(1024)
        self._handle = self._lib.wc_targets_create(
            device, TARGETS_STAGED if staged else TARGETS_IN_PLACE, err, len(err))
        if not self._handle:
            raise ValueError(err.value.decode())

    def _check(self, rc: int, err) -> None:
        if rc != 0:
            raise ValueError(err.value.decode())

    def add(self, name: str, ptr: int, nbytes: int, keep=None) -> None:
        """``nbytes`` bytes at address ``ptr`` of this process (device memory,
        or host memory for host targets). ``keep``: an object to hold alive
        as long as the target (the array or tensor owning the memory)."""
        err = ctypes.create_string_buffer(1024)
        self._check(self._lib.wc_targets_add(self._handle, name.encode(), ctypes.c_void_p(ptr),
                                             nbytes, err, len(err)), err)
        self._keep[name] = keep

    def add_numpy(self, arrays) -> None:
        """Host targets: writable, C-contiguous numpy arrays by name."""
        if self.device >= 0:
            raise ValueError(f"numpy arrays are host memory, the targets are on cuda:{self.device}")
        for name, a in dict(arrays).items():
            if not isinstance(a, np.ndarray) or not a.flags.c_contiguous or not a.flags.writeable:
                raise ValueError(f"tensor {name!r}: not a writable C-contiguous numpy array")
            self.add(name, a.ctypes.data, a.nbytes, keep=a)

    def vllm_layout(self, tp_rank: int = 0, tp_size: int = 1, ep_rank: int = 0,
                    ep_size: int = 1, family: str | None = None) -> None:
        """Name the targets by vLLM's FusedMoE layout of this TP/EP rank."""
        err = ctypes.create_string_buffer(1024)
        self._check(self._lib.wc_targets_set_vllm_layout(
            self._handle, (family or "").encode(), tp_rank, tp_size, ep_rank, ep_size, err,
            len(err)), err)

    def add_torch(self, tensors) -> None:
        """torch tensors by name (e.g. ``dict(model.named_parameters())``):
        contiguous, on this targets' device."""
        for name, t in dict(tensors).items():
            t = getattr(t, "data", t)
            if not t.is_cuda or t.device.index != self.device:
                raise ValueError(f"tensor {name!r}: on {t.device}, the targets are on "
                                 f"cuda:{self.device}")
            if not t.is_contiguous():
                raise ValueError(f"tensor {name!r}: not contiguous")
            self.add(name, t.data_ptr(), t.numel() * t.element_size(), keep=t)
        # The library writes these from its own stream: whatever torch still
        # has queued on them (initialisation, an optimizer step) goes first.
        import torch

        torch.cuda.current_stream(self.device).synchronize()

    def add_ipc(self, name: str, handle: bytes, allocation_bytes: int, offset: int,
                nbytes: int) -> None:
        """Bytes [offset, offset + nbytes) of another process's allocation,
        given by its raw 64-byte cudaIpcMemHandle_t."""
        err = ctypes.create_string_buffer(1024)
        self._check(self._lib.wc_targets_add_ipc(self._handle, name.encode(), handle, len(handle),
                                                 allocation_bytes, offset, nbytes, err,
                                                 len(err)), err)

    def add_ipc_descriptors(self, doc) -> None:
        """Targets from what weightcast.cuda_ipc makes for a process's
        CUDA tensors: a descriptors_document (handles in base64) or the
        describe_tensors list (raw handles). An inference worker describes
        its parameters this way and hands the result to the receiving process."""
        import base64  # noqa: PLC0415

        tensors = doc["tensors"] if isinstance(doc, dict) else doc
        for t in tensors:
            name, ipc = t.get("name"), t.get("cuda_ipc")
            if ipc is None:
                raise ValueError(f"tensor {name!r}: no cuda_ipc location")
            if t.get("dtype") not in _NUMPY:
                raise ValueError(f"tensor {name!r}: unknown dtype {t.get('dtype')!r}")
            handle = ipc["ipc_handle"]
            if isinstance(handle, str):
                handle = base64.b64decode(handle)
            count = int(np.prod([int(d) for d in t["shape"]], dtype=np.int64))
            self.add_ipc(name, handle, int(ipc["allocation_bytes"]), int(ipc["offset"]),
                         count * np.dtype(_NUMPY[t["dtype"]]).itemsize)

    def __len__(self) -> int:
        return int(self._lib.wc_targets_count(self._handle))

    def close(self) -> None:
        if self._handle:
            self._lib.wc_targets_destroy(self._handle)
            self._handle = None

    def __del__(self):
        self.close()


class Receiver:
    """One inference rank. `next(...)` waits for and runs one update.
    ``cuda_device``: the GPU of the receive buffers on NCCL groups (and of
    ParameterTargets given to next_into); ``device_tensors``: on NCCL groups
    hand tensors to the callback as DeviceTensors instead of host arrays."""

    def __init__(self, rendezvous: str, rank: int, token: str | None = None, timeout_s: float = 120,
                 bind_host: str = "127.0.0.1", lib_path: str | None = None,
                 cuda_device: int = 0, device_tensors: bool = False):
        self._handle = None
        self._lib = _load(receiver_library(lib_path))
        o = _Options()
        self._lib.wc_receiver_options_init(ctypes.byref(o))
        if token is None:  # the group token (required): as operators pass it
            token = os.environ.get("WEIGHTCAST_TOKEN", "")
        o.rendezvous, o.token, o.rank = rendezvous.encode(), token.encode(), rank
        o.timeout_s, o.bind_host = timeout_s, bind_host.encode()
        o.cuda_device, o.device_tensors = cuda_device, int(device_tensors)
        err = ctypes.create_string_buffer(1024)
        self._handle = self._lib.wc_receiver_open(ctypes.byref(o), err, len(err))
        if not self._handle:
            raise RuntimeError(f"weightcast receiver rank {rank}: {err.value.decode()}")

    def next(self, begin, tensor, commit, abort, wait_s: float = 5.0) -> ReceiveResult:
        """begin(version, num_tensors, config_json); tensor(name, dtype, shape,
        data) with data a numpy array of the raw bytes, or a DeviceTensor,
        valid during the call only; commit(version); abort(version).
        Exceptions in callbacks make this rank vote against the version.
        Callbacks run on a thread of the library (one at a time)."""

        def on_tensor(_user, t):
            t = t.contents
            dtype = t.dtype.decode()
            shape = tuple(t.shape[i] for i in range(t.ndim))
            if t.device >= 0:
                arr = DeviceTensor(t.name.decode(), dtype, shape, t.data or 0, t.nbytes, t.device)
                return _guard(tensor, errors)(arr.name, dtype, shape, arr)
            holder = _NUMPY[dtype]
            count = t.nbytes // np.dtype(holder).itemsize
            if count:
                buf = (ctypes.c_char * t.nbytes).from_address(t.data)
                arr = np.frombuffer(buf, dtype=holder, count=count).reshape(shape)
            else:
                arr = np.zeros(shape, dtype=holder)
            return _guard(tensor, errors)(t.name.decode(), dtype, shape, arr)

        errors: list = []
        cb = _bracket(begin, commit, abort, errors)
        cb.tensor = _TENSOR(on_tensor)
        version = ctypes.c_uint64(0)
        err = ctypes.create_string_buffer(4096)
        rc = self._lib.wc_receiver_next(self._handle, ctypes.byref(cb), wait_s,
                                        ctypes.byref(version), err, len(err))
        return _result(rc, version.value, err.value.decode(), errors)

    def next_into(self, targets: ParameterTargets, begin=None, commit=None, abort=None,
                  wait_s: float = 5.0) -> ReceiveResult:
        """One update copied straight into `targets` (see ParameterTargets);
        begin(version, num_tensors, config_json) before the first byte,
        commit(version) once the parameters hold the version (run the
        engine's post-load step there), abort(version) otherwise."""
        errors: list = []
        cb = _bracket(begin, commit, abort, errors)
        version = ctypes.c_uint64(0)
        dirty = ctypes.c_int(0)
        err = ctypes.create_string_buffer(4096)
        rc = self._lib.wc_receiver_next_into(self._handle, targets._handle, ctypes.byref(cb),
                                             wait_s, ctypes.byref(version), ctypes.byref(dirty),
                                             err, len(err))
        return _result(rc, version.value, err.value.decode(), errors, bool(dirty.value))

    def stop(self) -> None:
        self._lib.wc_receiver_stop(self._handle)

    def close(self) -> None:
        if self._handle:
            self._lib.wc_receiver_destroy(self._handle)
            self._handle = None


class VersionStager:
    """Holds one version's tensors as torch tensors until it is handed to the
    engine: ``begin``, then ``add`` per tensor (from a receive callback,
    whose buffer is reused afterwards: the bytes are copied), then the
    pairs in ``tensors``.

    ``expect``: name -> (safetensors dtype, shape) the engine takes (e.g.
    read from the checkpoint it loaded); a tensor not in it, of another
    dtype or shape, or a version missing some of it (but the ``optional``
    names), raises (the receive callback then votes the version down,
    naming the tensor).
    ``reuse``: keep the buffers for the next version (bounded memory: one
    copy of this rank's tensors); only when nothing still holds the pairs
    of the last version (the engine loaded them and let them go)."""

    def __init__(self, expect: Mapping[str, tuple[str, tuple]] | None = None,
                 optional: set[str] | None = None, reuse: bool = True):
        self.expect = dict(expect) if expect is not None else None
        self.optional = set(optional or ())
        self.reuse = reuse
        self.version = 0
        self.config_json = ""
        self.num_tensors = 0
        self.tensors: list[tuple[str, Any]] = []
        self.nbytes = 0
        self._buffers: dict[str, Any] = {}

    def begin(self, version: int, num_tensors: int, config_json: str) -> None:
        self.version, self.num_tensors, self.config_json = version, num_tensors, config_json
        self.tensors, self.nbytes = [], 0
        if not self.reuse:
            self._buffers = {}
        if self.expect is not None and num_tensors < len(self.expect) - len(self.optional):
            raise ReceiveError(f"version {version} has {num_tensors} tensors, the engine's "
                               f"model {len(self.expect) - len(self.optional)}: it cannot be "
                               "complete", version)

    def _check(self, name: str, dtype: str, shape: tuple) -> None:
        if self.expect is None:
            return
        want = self.expect.get(name)
        if want is None:
            raise ReceiveError(f"version {self.version}: tensor {name!r} is not a tensor of "
                               "the engine's model", self.version)
        if want[0] != dtype or tuple(want[1]) != tuple(shape):
            raise ReceiveError(f"version {self.version}: tensor {name!r} is {dtype} "
                               f"{list(shape)}, the engine's model has {want[0]} "
                               f"{list(want[1])}", self.version)

    def add(self, name: str, dtype: str, shape: tuple, data) -> Any:
        """Copies one received tensor (a numpy array of its raw bytes, or a
        DeviceTensor) into its staging buffer; returns the staged tensor."""
        import torch  # noqa: PLC0415 - engines take torch tensors

        from weightcast.cuda_ipc import torch_dtype  # noqa: PLC0415

        self._check(name, dtype, shape)
        want = torch_dtype(dtype)
        device = f"cuda:{data.device}" if isinstance(data, DeviceTensor) else "cpu"
        buf = self._buffers.get(name)
        if (buf is None or buf.dtype != want or tuple(buf.shape) != tuple(shape)
                or str(buf.device) != device):
            buf = torch.empty(shape, dtype=want, device=device)
            self._buffers[name] = buf
        if isinstance(data, DeviceTensor):
            buf.view(-1).view(torch.uint8).copy_(data.torch().view(-1).view(torch.uint8))
            torch.cuda.current_stream(buf.device).synchronize()
        elif buf.numel():
            buf.view(-1).view(torch.uint8).copy_(
                torch.from_numpy(np.ascontiguousarray(data).reshape(-1).view(np.uint8)))
        self.tensors.append((name, buf))
        self.nbytes += buf.numel() * buf.element_size()
        if self.expect is not None and len(self.tensors) == self.num_tensors:
            missing = set(self.expect) - self.optional - {n for n, _ in self.tensors}
            if missing:
                raise ReceiveError(
                    f"version {self.version}: {len(missing)} tensors of the engine's model are "
                    f"missing, e.g. {sorted(missing)[:3]}", self.version)
        return buf

    def chunks(self, chunk_bytes: int):
        """The staged pairs in chunks of about ``chunk_bytes``."""
        chunk, size = [], 0
        for name, t in self.tensors:
            chunk.append((name, t))
            size += t.numel() * t.element_size()
            if size >= chunk_bytes:
                yield chunk
                chunk, size = [], 0
        if chunk:
            yield chunk

    def release(self) -> None:
        """The engine is done with the pairs (the buffers stay for reuse)."""
        self.tensors = []

    def forget_aliased(self, tensors) -> int:
        """Drops, from reuse, every buffer whose storage one of ``tensors``
        (the engine's parameters and buffers) shares: an engine that kept a
        staged tensor as its own must not see the next version land in it
        before the vote. Returns how many were dropped."""
        held = {t.untyped_storage().data_ptr() for t in tensors if t.numel()}
        aliased = [n for n, b in self._buffers.items()
                   if b.numel() and b.untyped_storage().data_ptr() in held]
        for n in aliased:
            del self._buffers[n]
        return len(aliased)


class EngineAdapter:
    """Feeds each version to ``engine`` (see the module docstring for the
    calls it makes) in chunks of about ``chunk_bytes``.

    Staged (default): ``receive`` takes a version into a ``VersionStager``
    (the engine is not called), ``apply`` hands a committed one over;
    ``poll`` does both. ``streaming=True``: ``poll`` hands chunks over as
    they arrive, each one a fresh copy that the engine may keep until its
    module is complete."""

    def __init__(self, receiver: Receiver, engine, chunk_bytes: int = 256 << 20,
                 streaming: bool = False, stager: VersionStager | None = None):
        self.receiver = receiver
        self.engine = engine
        self.chunk_bytes = chunk_bytes
        self.streaming = streaming
        self.stager = stager if stager is not None else VersionStager(reuse=not streaming)
        if streaming and self.stager.reuse:
            raise ValueError("streaming hands tensors to the engine as they arrive: the "
                             "stager must not reuse its buffers")

    def receive(self, wait_s: float = 5.0) -> ReceiveResult:
        """One version into the stager, the engine untouched (staged mode).
        COMMITTED: ``self.stager`` holds it, ready for ``apply``."""
        if self.streaming:
            raise ValueError("receive stages a version; a streaming adapter uses poll")
        return self.receiver.next(
            begin=self.stager.begin,
            tensor=self.stager.add,
            commit=None, abort=None, wait_s=wait_s)

    def apply(self) -> None:
        """Hands the staged, committed version to the engine: begin, the
        chunks, finish. An engine error calls abort_update(version,
        dirty=True) and raises ReceiveError(dirty=True)."""
        st = self.stager
        self.engine.begin_update(st.version, st.config_json)
        try:
            for chunk in st.chunks(self.chunk_bytes):
                self.engine.load_weights(chunk)
            self.engine.finish_update(st.version)
        except Exception as e:
            self.engine.abort_update(st.version, dirty=True)
            raise ReceiveError(f"version {st.version}: the engine failed to load it after the "
                               f"group committed: {e}", st.version, dirty=True) from e
        finally:
            st.release()

    def poll(self, wait_s: float = 5.0) -> ReceiveResult:
        if not self.streaming:
            r = self.receive(wait_s)
            if r.status == ReceiveStatus.COMMITTED:
                try:
                    self.apply()
                except ReceiveError as e:
                    return ReceiveResult(ReceiveStatus.ERROR, r.version, str(e), dirty=True)
            return r
        return self._stream(wait_s)

    def _stream(self, wait_s: float) -> ReceiveResult:
        st = self.stager
        chunk: list = []
        size = [0]
        loaded = [False]

        def flush():
            if chunk:
                loaded[0] = True
                self.engine.load_weights(list(chunk))
                chunk.clear()
                size[0] = 0

        def on_begin(version, num_tensors, config_json):
            st.begin(version, num_tensors, config_json)
            loaded[0] = False
            self.engine.begin_update(version, config_json)

        def on_tensor(name, dtype, shape, arr):
            t = st.add(name, dtype, shape, arr)
            chunk.append((name, t))
            size[0] += t.numel() * t.element_size()
            if size[0] >= self.chunk_bytes:
                flush()

        def on_commit(version):
            flush()
            self.engine.finish_update(version)
            st.release()

        def on_abort(version):
            chunk.clear()
            st.release()
            self.engine.abort_update(version, dirty=loaded[0])

        r = self.receiver.next(begin=on_begin, tensor=on_tensor, commit=on_commit,
                               abort=on_abort, wait_s=wait_s)
        if r.status in (ReceiveStatus.ABORTED, ReceiveStatus.ERROR):
            r.dirty = loaded[0]
        return r

    def poll_into(self, targets: ParameterTargets, wait_s: float = 5.0) -> ReceiveResult:
        """One version copied by the library into the engine's parameters
        (no load_weights): begin_update, then finish_update once the
        parameters hold it, or abort_update (dirty: in-place targets were
        overwritten)."""
        begun = [0]

        def on_begin(v, n, cfg):
            begun[0] = v
            self.engine.begin_update(v, cfg)

        r = self.receiver.next_into(targets, begin=on_begin, commit=self.engine.finish_update,
                                    abort=None, wait_s=wait_s)
        if begun[0] and r.status in (ReceiveStatus.ABORTED, ReceiveStatus.ERROR):
            self.engine.abort_update(begun[0], dirty=r.dirty)
        return r
