"""weightcast in vLLM: each vLLM worker is a weightcast receiver rank.

- ``weight_transfer_config={"backend": "weightcast"}``: vLLM's native
  weight-transfer API (``weightcast.vllm.backend``), registered by this
  package's ``vllm.general_plugins`` entry point;
- ``worker_extension_cls="weightcast.vllm.WorkerExtension"`` plus
  ``collective_rpc``, for engines not on that API;
- ``VllmUpdater``: drives either from the process owning the engine.

Both ways in sit on ``VllmReceiverCore`` (``weightcast.vllm.core``).
"""

from weightcast.vllm.core import InitInfo, UpdateInfo, VllmReceiverCore, WorkerState
from weightcast.vllm.extension import WorkerExtension
from weightcast.vllm.updater import VllmUpdater

__all__ = ["InitInfo", "UpdateInfo", "VllmReceiverCore", "VllmUpdater", "WorkerExtension",
           "WorkerState"]
