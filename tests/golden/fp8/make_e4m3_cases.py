#!/usr/bin/env python3
"""Writes e4m3_cases.bin: float32 inputs and the float8_e4m3fn code that the
independent encoder (ml_dtypes) gives for each, after clamping to +-448 (the
saturating cast the FP8 block quantizer does). Record layout: <f4 value><u1
code>. Regenerate with: python3 tests/golden/fp8/make_e4m3_cases.py [OUT]
"""

import os
import sys

import ml_dtypes
import numpy as np

rng = np.random.default_rng(1234)
edge = [0.0, -0.0, 2.0**-9, -(2.0**-9), 2.0**-10, 2.0**-10 * 1.0000001, 2.0**-9 * 1.5,
        2.0**-9 * 2.5, 2.0**-6, 2.0**-6 * (1 - 2**-10), 0.5, 1.0, 1.0625, 1.1875, 448.0, -448.0,
        449.0, 464.0, 464.1, 480.0, 1e6, -1e6, np.inf, -np.inf, np.nan, -np.nan, 3.4e38]
vals = np.concatenate([
    np.array(edge, dtype=np.float32),
    rng.standard_normal(8000).astype(np.float32) * 100,
    rng.standard_normal(4000).astype(np.float32) * 0.01,
    # Every midpoint between adjacent e4m3 values: the ties-to-even cases.
    ((lambda g: (g[:-1] + g[1:]) / 2)(np.sort(np.unique(np.arange(0, 127, dtype=np.uint8)
                                                          .view(ml_dtypes.float8_e4m3fn)
                                                          .astype(np.float32))))),
    np.exp(rng.uniform(-12, 7, 4000)).astype(np.float32) * np.sign(rng.standard_normal(4000)),
]).astype(np.float32)
clamped = np.where(np.isnan(vals), vals, np.clip(vals, -448.0, 448.0)).astype(np.float32)
codes = clamped.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
rec = np.zeros(len(vals), dtype=[("v", "<f4"), ("c", "u1")])
rec["v"] = vals
rec["c"] = codes
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "e4m3_cases.bin")
rec.tofile(out)
print(f"{len(vals)} cases, ml_dtypes {ml_dtypes.__version__}, numpy {np.__version__} -> {out}")
