"""Tensors in a shared-memory file, described for weightcastd.

A CPU trainer keeps its parameters in one file (on /dev/shm, or any file
system) that weightcastd maps read-only. The trainer writes new values in
place between updates; the daemon reads them at the next Update without any
re-registration.

    f = ShmTensorFile.create("/dev/shm/rank0.bin", [("w", "BF16", (4, 8))])
    f.array("w")[:] = bf16_from_float32(values)
    f.write_descriptors("rank0.json", config={...})
    # weightcastctl --addr ... register --descriptors rank0.json
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass

import numpy as np

# safetensors dtype name -> numpy dtype used to hold the raw bytes.
# BF16 has no numpy type: it is held as its uint16 bit pattern.
NUMPY_DTYPES = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
    "F16": np.float16,
    "BF16": np.uint16,
    "F32": np.float32,
    "F64": np.float64,
    "F8_E4M3": np.uint8,
    "F8_E5M2": np.uint8,
}

ALIGNMENT = 256


def bf16_from_float32(x: np.ndarray) -> np.ndarray:
    """Rounds float32 to bfloat16 (nearest even), returned as uint16 bits."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    out = ((bits + rounding) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    out[nan] = 0x7FC0
    return out


def float32_from_bf16(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


@dataclass(frozen=True)
class TensorSlot:
    name: str
    dtype: str
    shape: tuple
    offset: int
    nbytes: int


class ShmTensorFile:
    """A file holding several tensors at aligned offsets."""

    def __init__(self, path: str, slots: list[TensorSlot], size: int):
        self.path = path
        self.slots = {s.name: s for s in slots}
        self._order = [s.name for s in slots]
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, max(size, 1))

    @classmethod
    def create(cls, path: str, specs: list[tuple[str, str, tuple]]) -> "ShmTensorFile":
        slots = []
        offset = 0
        seen = set()
        for name, dtype, shape in specs:
            if name in seen:
                raise ValueError(f"tensor {name!r} listed twice")
            if dtype not in NUMPY_DTYPES:
                raise ValueError(f"tensor {name!r}: unknown dtype {dtype!r}")
            seen.add(name)
            itemsize = np.dtype(NUMPY_DTYPES[dtype]).itemsize
            nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize
            slots.append(TensorSlot(name, dtype, tuple(int(d) for d in shape), offset, nbytes))
            offset = (offset + nbytes + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
        with open(path, "wb") as f:
            f.truncate(max(offset, 1))
        return cls(path, slots, offset)

    def array(self, name: str) -> np.ndarray:
        """A writable numpy view of tensor `name` (BF16 as uint16 bits)."""
        s = self.slots[name]
        count = s.nbytes // np.dtype(NUMPY_DTYPES[s.dtype]).itemsize
        flat = np.frombuffer(self._map, dtype=NUMPY_DTYPES[s.dtype], count=count, offset=s.offset)
        return flat.reshape(s.shape)

    def names(self) -> list[str]:
        return list(self._order)

    def descriptors(self, config: dict | None = None) -> dict:
        doc = {
            "tensors": [
                {
                    "name": s.name,
                    "dtype": s.dtype,
                    "shape": list(s.shape),
                    "shm": {"path": os.path.abspath(self.path), "offset": s.offset},
                }
                for s in (self.slots[n] for n in self._order)
            ]
        }
        if config is not None:
            doc["config"] = config
        return doc

    def write_descriptors(self, path: str, config: dict | None = None) -> None:
        with open(path, "w") as f:
            json.dump(self.descriptors(config), f, indent=1)

    def flush(self) -> None:
        self._map.flush()

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
