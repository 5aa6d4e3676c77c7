"""weightcast: freshly trained weights from a training job's ranks into its
inference engines, fast, verified, all or nothing.

Modules, by role (heavy dependencies are imported only where used):
- ``weightcast.trainer``: the training loop's client of its sidecar
  (``TrainerSidecar.register(model)``, ``publish(version)``); needs torch.
- ``weightcast.orchestrator``: drives every sidecar of a group at once.
- ``weightcast.control``: the sidecar's gRPC API (generated stubs, a typed
  client, errors carrying the daemon's status code and message).
- ``weightcast.receiver``: an inference rank in-process (the receiver
  library through ctypes) and ``EngineAdapter`` for any engine.
- ``weightcast.vllm``: the vLLM weight-transfer backend ``weightcast`` and a
  worker extension, both on one core; needs vllm.
- ``weightcast.shm``, ``weightcast.cuda_ipc``: how tensors are handed over.
"""

from weightcast.errors import (ControlError, GroupError, ReceiveError, SidecarUnavailable,
                               UpdateFailed, VersionAborted, WeightcastError)

__version__ = "0.1.0"

__all__ = ["ControlError", "GroupError", "ReceiveError", "SidecarUnavailable", "UpdateFailed",
           "VersionAborted", "WeightcastError", "__version__"]
