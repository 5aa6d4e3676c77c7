"""vLLM plugin entry point (``vllm.general_plugins``): registers the
``weightcast`` weight-transfer backend in every vLLM process, before the
model loads, and asks for the AMX tile state vLLM's CPU kernels use
(``weightcast.vllm.fixes``). Registering twice (plugins load once per
process, but a process may call this again) is a no-op."""

from __future__ import annotations


def register() -> None:
    from vllm.distributed.weight_transfer.factory import (  # noqa: PLC0415
        WeightTransferEngineFactory)

    from weightcast.vllm.backend import BACKEND_NAME  # noqa: PLC0415
    from weightcast.vllm.fixes import request_amx_permission  # noqa: PLC0415

    request_amx_permission()

    if BACKEND_NAME in WeightTransferEngineFactory._registry:
        return
    WeightTransferEngineFactory.register_engine(
        BACKEND_NAME, "weightcast.vllm.backend", "WeightcastWeightTransferEngine")
