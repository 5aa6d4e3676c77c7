"""weightcast.cuda_ipc: descriptor building everywhere; real handles
(checked against the allocation through a second process) only where torch
with CUDA is present."""

import base64
import json
import os
import subprocess
import sys

import pytest

from weightcast_testing.gpu import cuda_torch

from weightcast import cuda_ipc

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(cuda_ipc.__file__)))


def test_descriptor_and_document():
    h = bytes(range(64))
    d = cuda_ipc.tensor_descriptor("w", "BF16", (2, 3), h, 512, 0, 4096)
    assert d == {"name": "w", "dtype": "BF16", "shape": [2, 3],
                 "cuda_ipc": {"ipc_handle": h, "offset": 512, "device": 0,
                              "allocation_bytes": 4096}}
    doc = cuda_ipc.descriptors_document([d], config={"a": 1})
    text = json.dumps(doc)
    back = json.loads(text)
    assert base64.b64decode(back["tensors"][0]["cuda_ipc"]["ipc_handle"]) == h
    assert back["config"] == {"a": 1}


def test_rejects_bad_handle_and_offset():
    with pytest.raises(cuda_ipc.CudaIpcError):
        cuda_ipc.tensor_descriptor("w", "BF16", (1,), b"x" * 66, 0, 0, 10)
    with pytest.raises(cuda_ipc.CudaIpcError):
        cuda_ipc.tensor_descriptor("w", "BF16", (1,), b"x" * 64, 11, 0, 10)


def test_expandable_segments_are_detected_and_refused_by_name(monkeypatch):
    assert not cuda_ipc.expandable_segments_enabled({})
    assert cuda_ipc.expandable_segments_enabled(
        {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128, expandable_segments:True"})
    assert not cuda_ipc.expandable_segments_enabled(
        {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
         "PYTORCH_ALLOC_CONF": "expandable_segments:False"})
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    with pytest.raises(cuda_ipc.CudaIpcError, match="expandable_segments"):
        cuda_ipc.describe_tensors({"w": object()})
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    with pytest.raises(cuda_ipc.CudaIpcError, match="not on a CUDA device"):
        cuda_ipc.describe_tensors({"w": object()})


def test_dtype_names():
    assert cuda_ipc.safetensors_dtype("torch.bfloat16") == "BF16"
    assert cuda_ipc.safetensors_dtype("torch.float8_e4m3fn") == "F8_E4M3"
    with pytest.raises(cuda_ipc.CudaIpcError):
        cuda_ipc.safetensors_dtype("torch.complex64")


_CHILD = r"""
import base64, ctypes, sys, json
sys.path.insert(0, sys.argv[1])
from weightcast import cuda_ipc
d = json.loads(sys.stdin.read())
rt = cuda_ipc.cudart()
rt.cudaSetDevice(0)
h = (ctypes.c_char * 64).from_buffer_copy(base64.b64decode(d["cuda_ipc"]["ipc_handle"]))
p = ctypes.c_void_p()
assert rt.cudaIpcOpenMemHandle(ctypes.byref(p), h, 1) == 0
buf = (ctypes.c_uint8 * 8)()
assert rt.cudaMemcpy(buf, ctypes.c_void_p(p.value + d["cuda_ipc"]["offset"]), 8, 2) == 0
print(list(buf))
"""


def test_handle_of_a_view_reads_the_right_bytes_in_another_process():
    torch = cuda_torch(module_level=False)
    base = torch.arange(4096, dtype=torch.uint8, device="cuda")
    view = base[1000:1008]
    (d,) = cuda_ipc.describe_tensors({"v": view})
    assert d["dtype"] == "U8" and d["shape"] == [8]
    assert d["cuda_ipc"]["offset"] >= 1000
    doc = cuda_ipc.descriptors_document([d])
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, PYTHON_DIR],
        input=json.dumps(doc["tensors"][0]), capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [(1000 + i) % 256 for i in range(8)]
