"""A vLLM worker extension, for users not on the weight-transfer API:

    llm = LLM(model=..., worker_extension_cls="weightcast.vllm.WorkerExtension")
    llm.collective_rpc("weightcast_init", args=({"rendezvous": ..., "first_rank": 2},))
    llm.collective_rpc("weightcast_update", args=({"version": 7},))   # receive + apply
    llm.reset_prefix_cache()

Same core as the backend (``weightcast.vllm.core``); data travels over
weightcast's own transport, only control over the RPC.
"""

from __future__ import annotations

from dataclasses import asdict

from weightcast.vllm.core import VllmReceiverCore


class WorkerExtension:
    """Mixed into vLLM's Worker: ``self`` is the worker."""

    def _weightcast_core(self) -> VllmReceiverCore:
        core = getattr(self, "_weightcast", None)
        if core is None:
            core = VllmReceiverCore(self.model_runner.get_model(), self.vllm_config,
                                    device=getattr(self, "device", None))
            self._weightcast = core
        return core

    def weightcast_init(self, init_info: dict) -> int:
        """Joins the group; returns this worker's rank in it."""
        return self._weightcast_core().init(init_info)

    def weightcast_update(self, update_info: dict | None = None) -> int:
        """Receives one version (see UpdateInfo) and applies it; returns it."""
        core = self._weightcast_core()
        core.start()
        core.receive(update_info or {})
        return core.finish()

    def weightcast_state(self) -> dict:
        return asdict(self._weightcast_core().state)
