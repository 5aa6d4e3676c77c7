"""CUDA IPC sources: the trainer's half.

weightcastd reads a GPU trainer's parameters in place: for each CUDA
allocation the trainer hands over a raw ``cudaIpcMemHandle_t`` (64 bytes,
from ``cudaIpcGetMemHandle`` on the allocation's base) and, per tensor, its
byte offset from that base. The daemon opens each allocation once and keeps it
mapped across updates (kernels/cuda_ipc.h); after the trainer reallocates a
tensor, registering it again with the new handle moves it.

Not torch's own sharing handle: ``untyped_storage()._share_cuda_()`` returns
PyTorch's 66-byte framing, so the handle is made here with ctypes on the CUDA
runtime, and the base with ``cuMemGetAddressRange`` (caching allocators hand
out views inside larger allocations).

    import torch
    from weightcast.cuda_ipc import describe_tensors, descriptors_document
    params = {n: p.data for n, p in model.named_parameters()}
    doc = descriptors_document(describe_tensors(params))
    # json.dump(doc, ...) then `weightcastctl register --descriptors ...`,
    # or send the TensorDescriptor dicts through the control API.

torch is imported only when present; the ctypes helpers take raw pointers.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import glob
import os
import sys
from typing import Any, Iterable, Mapping

IPC_HANDLE_BYTES = 64

# torch dtype name (str(torch.bfloat16) without "torch.") -> safetensors name.
SAFETENSORS_DTYPES = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}


class CudaIpcError(RuntimeError):
    """A CUDA runtime/driver call failed, or a tensor cannot be shared."""


def _candidate_dirs() -> list[str]:
    dirs = []
    for p in sys.path:
        dirs += glob.glob(os.path.join(p, "nvidia", "cuda_runtime", "lib"))
        dirs += glob.glob(os.path.join(p, "nvidia", "cu*", "lib"))
    return dirs


def _load(names: Iterable[str]) -> ctypes.CDLL:
    errors = []
    for name in names:
        for d in [""] + _candidate_dirs():
            path = os.path.join(d, name) if d else name
            try:
                return ctypes.CDLL(path)
            except OSError as e:
                errors.append(f"{path}: {e}")
    raise CudaIpcError("cannot load " + " / ".join(names) + ": " + "; ".join(errors[-3:]))


_cudart = None
_cuda = None


def cudart() -> ctypes.CDLL:
    """The CUDA runtime (the torch wheel's libcudart.so.13 when present)."""
    global _cudart
    if _cudart is None:
        _cudart = _load(["libcudart.so.13", "libcudart.so.12", "libcudart.so"])
    return _cudart


def cuda_driver() -> ctypes.CDLL:
    global _cuda
    if _cuda is None:
        _cuda = _load(["libcuda.so.1", "libcuda.so"])
    return _cuda


def _check_rt(err: int, what: str) -> None:
    if err != 0:
        rt = cudart()
        rt.cudaGetErrorString.restype = ctypes.c_char_p
        msg = rt.cudaGetErrorString(ctypes.c_int(err))
        raise CudaIpcError(f"{what}: CUDA error {err} ({msg.decode() if msg else '?'})")


def _check_drv(err: int, what: str) -> None:
    if err != 0:
        raise CudaIpcError(f"{what}: CUDA driver error {err}")


def allocation_range(ptr: int, device: int) -> tuple[int, int]:
    """(base, size) of the CUDA allocation containing device address ``ptr``."""
    rt = cudart()
    _check_rt(rt.cudaSetDevice(ctypes.c_int(device)), "cudaSetDevice")
    _check_rt(rt.cudaFree(ctypes.c_void_p(0)), "cudaFree(0)")  # make the context current
    drv = cuda_driver()
    base = ctypes.c_uint64(0)
    size = ctypes.c_size_t(0)
    fn = getattr(drv, "cuMemGetAddressRange_v2", None) or drv.cuMemGetAddressRange
    _check_drv(fn(ctypes.byref(base), ctypes.byref(size), ctypes.c_uint64(ptr)),
               f"cuMemGetAddressRange(0x{ptr:x})")
    return base.value, size.value


def ipc_handle(base: int, device: int) -> bytes:
    """The raw 64-byte cudaIpcMemHandle_t of the allocation starting at ``base``."""
    rt = cudart()
    _check_rt(rt.cudaSetDevice(ctypes.c_int(device)), "cudaSetDevice")
    handle = (ctypes.c_char * IPC_HANDLE_BYTES)()
    _check_rt(rt.cudaIpcGetMemHandle(ctypes.byref(handle), ctypes.c_void_p(base)),
              f"cudaIpcGetMemHandle(0x{base:x})")
    return bytes(handle)


def tensor_descriptor(name: str, dtype: str, shape: Iterable[int], handle: bytes, offset: int,
                      device: int, allocation_bytes: int) -> dict[str, Any]:
    """One TensorDescriptor (control.proto) as a dict, with cuda_ipc location."""
    if len(handle) != IPC_HANDLE_BYTES:
        raise CudaIpcError(f"tensor {name!r}: IPC handle of {len(handle)} bytes, expected 64")
    if offset < 0 or offset > allocation_bytes:
        raise CudaIpcError(f"tensor {name!r}: offset {offset} outside {allocation_bytes} bytes")
    return {
        "name": name,
        "dtype": dtype,
        "shape": [int(d) for d in shape],
        "cuda_ipc": {
            "ipc_handle": handle,
            "offset": int(offset),
            "device": int(device),
            "allocation_bytes": int(allocation_bytes),
        },
    }


def torch_dtype(safetensors_name: str) -> Any:
    """The torch dtype of a safetensors dtype name ("BF16" -> torch.bfloat16)."""
    import torch  # noqa: PLC0415 - only callers that hold torch tensors ask

    for torch_name, st in SAFETENSORS_DTYPES.items():
        if st == safetensors_name:
            return getattr(torch, torch_name)
    raise CudaIpcError(f"dtype {safetensors_name!r} has no torch dtype")


def safetensors_dtype(torch_dtype: Any) -> str:
    key = str(torch_dtype).removeprefix("torch.")
    if key not in SAFETENSORS_DTYPES:
        raise CudaIpcError(f"dtype {torch_dtype} has no safetensors name")
    return SAFETENSORS_DTYPES[key]


def expandable_segments_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether torch's caching allocator is configured with
    ``expandable_segments:True`` (PYTORCH_CUDA_ALLOC_CONF or
    PYTORCH_ALLOC_CONF; the last setting wins, as torch parses it)."""
    env = os.environ if environ is None else environ
    enabled = False
    for var in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        for item in env.get(var, "").split(","):
            key, _, value = item.partition(":")
            if key.strip() == "expandable_segments":
                enabled = value.strip().lower() in ("true", "1")
    return enabled


def describe_tensors(tensors: Mapping[str, Any], daemon_device: int | None = None
                     ) -> list[dict[str, Any]]:
    """TensorDescriptor dicts for a name -> CUDA torch.Tensor mapping.

    Tensors must be contiguous CUDA tensors (views of larger allocations are
    fine: the offset is data_ptr - allocation base). ``daemon_device`` is the
    device ordinal as the daemon sees it (default: the tensor's own index;
    they differ when the processes have different CUDA_VISIBLE_DEVICES).
    One handle is made per allocation.
    """
    if tensors and expandable_segments_enabled():
        # Such memory is mapped with cuMemMap: cudaIpcGetMemHandle refuses it.
        raise CudaIpcError(
            "torch's allocator runs with expandable_segments:True (PYTORCH_CUDA_ALLOC_CONF), "
            "whose memory has no CUDA IPC handle: start the trainer without it, or hand the "
            "tensors over through shared memory (weightcast.shm)")
    handles: dict[tuple[int, int], tuple[bytes, int]] = {}
    out = []
    for name, t in tensors.items():
        if not getattr(t, "is_cuda", False):
            raise CudaIpcError(f"tensor {name!r} is not on a CUDA device")
        if not t.is_contiguous():
            raise CudaIpcError(f"tensor {name!r} is not contiguous")
        dev = t.device.index if t.device.index is not None else 0
        ptr = t.data_ptr()
        nbytes = t.numel() * t.element_size()
        base, size = allocation_range(ptr, dev) if nbytes > 0 else (ptr, 0)
        key = (dev, base)
        if key not in handles:
            handles[key] = (ipc_handle(base, dev), size)
        handle, size = handles[key]
        if ptr - base + nbytes > size:
            raise CudaIpcError(f"tensor {name!r} runs past its allocation")
        out.append(tensor_descriptor(name, safetensors_dtype(t.dtype), tuple(t.shape), handle,
                                     ptr - base, dev if daemon_device is None else daemon_device,
                                     size))
    return out


def descriptors_document(descriptors: list[dict[str, Any]], config: dict | None = None
                         ) -> dict[str, Any]:
    """A JSON-ready RegisterTensorsRequest (proto3 JSON: bytes as base64)."""
    tensors = []
    for d in descriptors:
        d = dict(d)
        loc = dict(d["cuda_ipc"])
        loc["ipc_handle"] = base64.b64encode(loc["ipc_handle"]).decode("ascii")
        d["cuda_ipc"] = loc
        tensors.append(d)
    doc: dict[str, Any] = {"tensors": tensors}
    if config is not None:
        doc["config"] = config
    return doc
