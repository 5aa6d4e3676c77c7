"""Checks of a block-FP8 checkpoint (FORMATS.md section 3) against the
trainer's bf16 values: every quantized weight dequantizes within FP8's
rounding bound, its scale is named and shaped as vLLM reads it, and the
tensors never quantized are the bf16 bytes as sent."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from weightcast.shm import float32_from_bf16
from weightcast_testing.modelgen import MoeModelSpec, values

BLOCK = 128


def dequantize(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    x = q.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    rows, cols = x.shape[-2:]
    full = np.repeat(np.repeat(scale, BLOCK, axis=-2)[..., :rows, :], BLOCK, axis=-1)[..., :cols]
    return x * full


def check_fp8_checkpoint(got: dict, config: dict, model: MoeModelSpec, version: int) -> int:
    """Asserts the above for checkpoint tensors ``got`` with ``config``;
    returns how many weights were quantized."""
    q = config["quantization_config"]
    assert q["quant_method"] == "fp8" and q["weight_block_size"] == [BLOCK, BLOCK]
    assert "lm_head" in q["modules_to_not_convert"]
    assert q["ignored_layers"] == q["modules_to_not_convert"]
    quantized = 0
    for name, dtype, shape in model.tensors():
        w = float32_from_bf16(values(name, dtype, shape, version))
        if name + "_scale_inv" in got:
            quantized += 1
            assert got[name].dtype == ml_dtypes.float8_e4m3fn, name
            scale = got[name + "_scale_inv"]
            assert scale.dtype == np.float32, name
            assert scale.shape == (-(-shape[0] // BLOCK), -(-shape[1] // BLOCK)), name
            d = dequantize(got[name].view(np.uint8), scale)
            s = np.repeat(np.repeat(scale, BLOCK, 0)[: shape[0]], BLOCK, 1)[:, : shape[1]]
            assert np.all(np.abs(d - w) <= np.maximum(2.0**-4 * np.abs(w), 2.0**-10 * s)), name
        else:
            # Never quantized: embeddings, lm_head, norms, the router, 1-D.
            assert any(k in name for k in ("embed", "lm_head", "norm", "mlp.gate.weight")), name
            assert got[name].view(np.uint16).tobytes() == \
                values(name, dtype, shape, version).tobytes(), name
    return quantized
