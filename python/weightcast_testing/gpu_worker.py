"""An inference-worker stand-in for the GPU receiver tests: holds one
parameter per tensor of a generated model on a GPU (zeros) and exports them
through CUDA IPC, as a worker that lets another process write its weights
would (weightcast.cuda_ipc makes the handles). Prints one line of
JSON (a descriptors document), then answers ``check VERSION`` lines on
standard input with ``OK`` or ``BAD <name>``, comparing every parameter byte
for byte with the generator's values of that version.

    python -m weightcast_testing.gpu_worker --device 0   # tiny model
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from weightcast_testing.modelgen import MoeModelSpec, values
from weightcast.cuda_ipc import describe_tensors, descriptors_document

TORCH_DTYPES = {"BF16": torch.bfloat16, "F32": torch.float32}


def raw_bytes(t: torch.Tensor) -> bytes:
    return t.detach().reshape(-1).view(torch.uint8).cpu().numpy().tobytes()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", type=int, default=0)
    args = ap.parse_args()
    spec = MoeModelSpec.tiny()
    tensors = spec.tensors()
    # One allocation for all of them, as an engine's packed weights: the
    # handles then carry offsets into it.
    sizes = [int(np.prod(shape)) * (2 if dtype == "BF16" else 4) for _, dtype, shape in tensors]
    arena = torch.zeros(sum(sizes), dtype=torch.uint8, device=f"cuda:{args.device}")
    params, at = {}, 0
    for (name, dtype, shape), n in zip(tensors, sizes):
        params[name] = arena[at:at + n].view(TORCH_DTYPES[dtype]).view(shape)
        at += n
    print(json.dumps(descriptors_document(describe_tensors(params))), flush=True)
    for line in sys.stdin:
        words = line.split()
        if len(words) != 2 or words[0] != "check":
            print(f"BAD request {line.strip()!r}", flush=True)
            continue
        version = int(words[1])
        torch.cuda.synchronize(args.device)
        bad = [name for name, dtype, shape in tensors
               if raw_bytes(params[name]) != values(name, dtype, shape, version).tobytes()]
        print("OK" if not bad else f"BAD {bad[0]} (+{len(bad) - 1})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
