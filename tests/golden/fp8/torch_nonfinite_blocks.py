#!/usr/bin/env python3
"""Block FP8 of non-finite input by the reference quantizer, for
kernels/fp8_reference_test: torch as vLLM's per_block_cast_to_fp8 does it
(amax of |x| in fp32, clamp, scale = amax / 448, x / scale, cast to
float8_e4m3fn), on one 128x128 block per case. Writes, per case and rule
(0 amax-clamp 1e-4, 1 scale-clamp 1e-12): <u4 rule> <f4 x 16384 input>
<f4 scale> <u1 x 16384 codes>.  Usage: torch_nonfinite_blocks.py OUT
"""

import sys

import numpy as np
import torch

N = 128
rng = np.random.default_rng(7)


def block(marks):
    x = (rng.standard_normal((N, N)) * 3).astype(np.float32)
    x[0, 1], x[5, 7] = 0.0, -0.0
    for (r, c), v in marks.items():
        x[r, c] = v
    return x


cases = [
    block({(3, 4): np.inf}),
    block({(3, 4): -np.inf}),
    block({(0, 0): np.inf, (127, 127): -np.inf}),
    block({(9, 9): np.nan}),
    block({(9, 9): -np.nan}),
    np.full((N, N), np.nan, dtype=np.float32),
    block({(1, 1): np.nan, (2, 2): np.inf}),
    block({}),  # finite: the rules as usual
]

with open(sys.argv[1], "wb") as f:
    for x in cases:
        for rule in (0, 1):
            t = torch.from_numpy(x)
            amax = t.abs().float().amax()
            scale = amax.clamp(min=1e-4) / 448.0 if rule == 0 else (amax / 448.0).clamp(min=1e-12)
            q = (t / scale).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
            f.write(np.uint32(rule).tobytes())
            f.write(x.astype("<f4").tobytes())
            f.write(np.float32(scale.item()).tobytes())
            f.write(q.astype(np.uint8).tobytes())
