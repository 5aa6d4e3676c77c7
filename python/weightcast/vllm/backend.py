"""The ``weightcast`` backend of vLLM's weight-transfer API.

    llm = LLM(model=..., weight_transfer_config={"backend": "weightcast"})
    llm.init_weight_transfer_engine({"init_info": {"rendezvous": "10.0.0.1:29501",
                                                   "first_rank": 2, "token": TOKEN}})
    # per version, while the trainer publishes it:
    llm.start_weight_update()
    llm.update_weights({"update_info": {"version": 7}})   # receive, verify, vote
    llm.finish_weight_update(weight_version="7")           # apply: one reload bracket
    llm.reset_prefix_cache()

Registered by the ``vllm.general_plugins`` entry point of this package
(``weightcast.vllm.plugin``), so ``vllm serve --weight-transfer-config
'{"backend": "weightcast"}'`` and AsyncLLM find it too. Init and update
arguments: ``weightcast.vllm.core.InitInfo`` and ``UpdateInfo``.
"""

from __future__ import annotations

from vllm.distributed.weight_transfer.base import WeightTransferEngine

from weightcast.vllm.core import InitInfo, UpdateInfo, VllmReceiverCore

BACKEND_NAME = "weightcast"


class WeightcastWeightTransferEngine(WeightTransferEngine[InitInfo, UpdateInfo]):
    """Each vLLM worker is one weightcast receiver rank (see
    ``weightcast.vllm.core`` for what each lifecycle step does)."""

    init_info_cls = InitInfo
    update_info_cls = UpdateInfo
    # The draft model would need a rank of its own in the group.
    supports_draft_weight_update = False

    def __init__(self, config, vllm_config, device, model) -> None:
        super().__init__(config, vllm_config, device, model)
        self.core = VllmReceiverCore(model, vllm_config, self.model_config, device)

    def init_transfer_engine(self, init_info: InitInfo) -> None:
        self.core.init(init_info)

    def start_weight_update(self) -> None:
        self.core.set_target(self.model, self.model_config)
        self.core.start()

    def receive_weights(self, update_info: UpdateInfo) -> None:
        self.core.receive(update_info)

    def finish_weight_update(self) -> None:
        self.core.finish()

    def shutdown(self) -> None:
        self.core.close()
