"""Drives a vLLM engine's weightcast updates from the process that owns the
engine: vLLM's own weight-transfer calls, in the order and with the steps
around them that make an update correct.

    updater = VllmUpdater(llm)                      # LLM, or AsyncLLM
    updater.init(rendezvous="10.0.0.1:29501", first_rank=2, token=TOKEN)
    updater.update(7)                               # or: await updater.update_async(7)

Per version: ``start_weight_update``, ``update_weights`` (receive, verify,
vote), then ``finish_weight_update(weight_version=str(v))`` (the apply),
then ``reset_prefix_cache`` (KV blocks computed with the old weights must
not be reused). On an AsyncLLM the engine keeps generating while the
version is received; requests in flight when it is applied follow
``in_flight``: "keep" (they pause and continue on the new weights, their
KV recomputed), "abort" (they end as aborted) or "wait" (the apply waits
until they complete). A version the group voted down raises
``VersionAborted``; the engine keeps serving the previous one (staged
mode) or, streamed, is labelled "dirty" until a good version lands.
"""

from __future__ import annotations

from dataclasses import asdict

from weightcast.errors import ReceiveError, VersionAborted
from weightcast.vllm.core import InitInfo, UpdateInfo, worker_state

IN_FLIGHT_POLICIES = ("keep", "abort", "wait")
DIRTY_LABEL = "dirty"


def _as_receive_error(e: Exception, version: int) -> ReceiveError:
    """A worker's error as it comes back through vLLM (in-process: the
    exception itself; from a worker process: its text)."""
    if isinstance(e, ReceiveError):
        return e
    text = str(e)
    cls = VersionAborted if f"version {version} aborted" in text else ReceiveError
    return cls(text, version, dirty="engine is dirty" in text)


class VllmUpdater:
    """See the module doc. ``engine``: a ``vllm.LLM`` (use ``init`` and
    ``update``) or a ``vllm.v1.engine.async_llm.AsyncLLM`` (``init_async``
    and ``update_async``)."""

    def __init__(self, engine):
        self.engine = engine
        self.info: InitInfo | None = None

    def _init_request(self, kwargs) -> dict:
        self.info = InitInfo(**kwargs)
        return asdict(self.info)

    def init(self, **init_info) -> None:
        """``init_info``: the fields of ``weightcast.vllm.core.InitInfo``."""
        self.engine.init_weight_transfer_engine({"init_info": self._init_request(init_info)})

    async def init_async(self, **init_info) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest  # noqa: PLC0415

        await self.engine.init_weight_transfer_engine(
            WeightTransferInitRequest(init_info=self._init_request(init_info)))

    def state(self) -> list[dict]:
        """Every worker's WorkerState (as dicts), on an offline LLM. It ships
        a function to the workers: a multi-process engine allows that only
        with VLLM_ALLOW_INSECURE_SERIALIZATION=1 (the label set at finish,
        ``get_weight_version()``, needs nothing)."""
        return self.engine.collective_rpc(worker_state)

    @staticmethod
    def _update_info(version: int, wait_s: float) -> dict:
        if not version:
            raise ValueError("update needs the version: it labels the engine's weights")
        return asdict(UpdateInfo(version=version, wait_s=wait_s))

    def _streaming(self) -> bool:
        return self.info is not None and self.info.staging == "none"

    def update(self, version: int, wait_s: float = 120.0) -> int:
        """Receives ``version`` and applies it (see the module doc)."""
        info = self._update_info(version, wait_s)
        e = self.engine
        e.start_weight_update()
        try:
            e.update_weights({"update_info": info})
        except Exception as err:  # noqa: BLE001 - re-raised as weightcast's own
            raised = _as_receive_error(err, version)
            if raised.dirty:
                e.update_weight_version(DIRTY_LABEL)
            raise raised from err
        e.finish_weight_update(weight_version=str(version))
        e.reset_prefix_cache()
        return version

    async def update_async(self, version: int, wait_s: float = 120.0,
                           in_flight: str = "keep") -> int:
        """``update`` on an AsyncLLM, with ``in_flight`` for the requests
        running when the weights change."""
        from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest  # noqa: PLC0415

        if in_flight not in IN_FLIGHT_POLICIES:
            raise ValueError(f"in_flight={in_flight!r}: one of {IN_FLIGHT_POLICIES}")
        info = self._update_info(version, wait_s)
        e = self.engine
        paused = False
        if self._streaming():   # streamed weights change during the receive
            await e.pause_generation(mode=in_flight, clear_cache=False)
            paused = True
        try:
            await e.start_weight_update()
            try:
                await e.update_weights(WeightTransferUpdateRequest(update_info=info))
            except Exception as err:  # noqa: BLE001 - re-raised as weightcast's own
                raised = _as_receive_error(err, version)
                if raised.dirty:
                    await e.update_weight_version(DIRTY_LABEL)
                raise raised from err
            if not paused:
                await e.pause_generation(mode=in_flight, clear_cache=False)
                paused = True
            await e.finish_weight_update(weight_version=str(version))
            # Running requests hold KV blocks of the old weights: "keep"
            # recomputes them on the new ones.
            await e.reset_prefix_cache(reset_running_requests=in_flight == "keep")
        finally:
            if paused:
                await e.resume_generation()
        return version
