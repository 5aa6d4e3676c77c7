"""The one gate of every Python GPU test: torch with a CUDA device, or a
skip saying what is missing; with WC_REQUIRE_GPU=1 (scripts/gpu-run sets it)
a failure instead, so a GPU run cannot pass while testing nothing."""

from __future__ import annotations

import os

import pytest


def gpu_required() -> bool:
    return os.environ.get("WC_REQUIRE_GPU") == "1"


def cuda_torch(module_level: bool = True):
    """torch, once a CUDA device is known to be usable; else skips (the
    module, or the test when ``module_level`` is False) or fails."""
    reason = None
    try:
        import torch
    except ImportError as e:
        torch, reason = None, f"torch is not installed ({e})"
    if torch is not None and not torch.cuda.is_available():
        reason = "no CUDA device"
    if reason is None:
        return torch
    if gpu_required():
        pytest.fail(f"{reason}, and WC_REQUIRE_GPU=1 requires one", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)
