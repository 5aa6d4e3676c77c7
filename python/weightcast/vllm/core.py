"""One vLLM worker as a weightcast receiver rank: the core under both ways in
(the ``weightcast`` weight-transfer backend and the worker extension).

Per version, three steps, as vLLM's weight-transfer lifecycle names them:
- ``start``: a session opens (nothing is touched).
- ``receive``: this worker takes part in the group's update. Staged (the
  default, ``staging="host"``): the version lands in host buffers (one copy
  of the model, kept and reused across versions), every tensor checked
  against the model the engine serves before this rank votes; the engine is
  not touched, so a version the group votes down changes nothing. Streamed
  (``staging="none"``): tensors go into vLLM's layerwise loader as they
  arrive, no staged copy; a version aborted then leaves the engine dirty
  (``dirty`` stays true until a version is applied).
- ``finish``: the staged version goes into the engine inside one layerwise
  reload bracket (``initialize_layerwise_reload``, ``load_weights`` per
  chunk, ``finalize_layerwise_reload``: vLLM's post-load step runs once per
  layer, never per chunk), with the fixes of ``weightcast.vllm.fixes``.

Tensors handed to ``load_weights`` are the stager's buffers and are not
written again before the bracket closed (vLLM's layerwise loader keeps
references until a layer is complete). The prefix cache lives in the engine
core, out of a worker's reach: the caller resets it after ``finish``
(``weightcast.vllm.VllmUpdater`` does).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from weightcast.errors import ReceiveError, VersionAborted
from weightcast.receiver import EngineAdapter, Receiver, ReceiveStatus, VersionStager
from weightcast.vllm.fixes import reload_fixes

log = logging.getLogger("weightcast.vllm")

STAGING_MODES = ("host", "device", "none")


@dataclass
class InitInfo:
    """``init_weight_transfer_engine`` arguments (the ``init_info`` dict).

    ``rendezvous``: host:port of sender 0's rendezvous. ``first_rank``: the
    group rank of this engine's first worker; worker i (data-parallel index
    times world size plus its rank) is ``first_rank + i``. ``staging``:
    "host" (all or nothing, one host copy of the model), "device" (the
    same on the worker's GPU, for NCCL groups; not run yet: no GPU build of
    vLLM has been available here) or "none" (stream into the engine).
    ``token``: the group token (default: ``$WEIGHTCAST_TOKEN``; one is
    required). ``check_tensors``: refuse, before voting, a version
    whose tensors differ in name, dtype or shape from the checkpoint the
    engine loaded (when that is a local safetensors directory)."""

    rendezvous: str
    first_rank: int
    token: str = ""
    timeout_s: float = 120.0
    bind_host: str = "127.0.0.1"
    staging: str = "host"
    chunk_bytes: int = 64 << 20
    check_tensors: bool = True
    lib_path: str = ""

    def __post_init__(self):
        if not self.rendezvous or ":" not in self.rendezvous:
            raise ValueError(f"rendezvous {self.rendezvous!r}: host:port of sender 0")
        if not isinstance(self.first_rank, int) or self.first_rank < 1:
            raise ValueError(f"first_rank {self.first_rank!r}: the group rank of this engine's "
                             "first worker (inference ranks follow the senders, so >= 1)")
        if self.staging not in STAGING_MODES:
            raise ValueError(f"staging {self.staging!r}: one of {STAGING_MODES}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s {self.timeout_s!r}: must be > 0")
        if self.chunk_bytes < 1:
            raise ValueError(f"chunk_bytes {self.chunk_bytes!r}: must be >= 1")


@dataclass
class UpdateInfo:
    """``update_weights`` arguments (the ``update_info`` dict): take
    ``version`` (0: whichever version the senders announce next), waiting
    for it at most ``wait_s`` seconds. Versions older than ``version`` that
    arrive first are taken part in (the group needs every rank) and dropped;
    a newer one is refused, so the label the caller gives the engine is
    always the version it holds."""

    version: int = 0
    wait_s: float = 120.0

    def __post_init__(self):
        if not isinstance(self.version, int) or self.version < 0:
            raise ValueError(f"version {self.version!r}: an integer >= 0 (0: the next one)")
        if not self.wait_s >= 0:
            raise ValueError(f"wait_s {self.wait_s!r}: must be >= 0")


def checkpoint_tensors(model_path: str, hf_config=None
                       ) -> tuple[dict[str, tuple[str, tuple]], set[str]] | None:
    """(name -> (safetensors dtype, shape), optional names) of the
    safetensors checkpoint in directory ``model_path``, or None when it is
    not a local safetensors checkpoint. With tied word embeddings the
    trainer's ``lm_head.weight`` is optional (vLLM skips it)."""
    if not model_path or not os.path.isdir(model_path):
        return None
    files = sorted(glob.glob(os.path.join(model_path, "*.safetensors")))
    if not files:
        return None
    from safetensors import safe_open  # noqa: PLC0415 - a vLLM dependency

    specs: dict[str, tuple[str, tuple]] = {}
    for path in files:
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                specs[name] = (sl.get_dtype(), tuple(sl.get_shape()))
    optional: set[str] = set()
    tied = getattr(hf_config, "tie_word_embeddings", False)
    if tied and "lm_head.weight" not in specs and "model.embed_tokens.weight" in specs:
        specs["lm_head.weight"] = specs["model.embed_tokens.weight"]
        optional.add("lm_head.weight")
    return specs, optional


class VllmModelLoader:
    """The engine side of EngineAdapter for one vLLM model: the layerwise
    reload bracket, in vLLM's config context and without autograd."""

    def __init__(self, model, vllm_config, model_config):
        self.model = model
        self.vllm_config = vllm_config
        self.model_config = model_config
        self.dirty = False
        self._bracket: ExitStack | None = None

    def _context(self) -> ExitStack:
        import torch  # noqa: PLC0415
        from vllm.config import set_current_vllm_config  # noqa: PLC0415

        stack = ExitStack()
        stack.enter_context(set_current_vllm_config(self.vllm_config))
        stack.enter_context(torch.no_grad())
        return stack

    def begin_update(self, version: int, config_json: str) -> None:
        from vllm.model_executor.model_loader.reload import (  # noqa: PLC0415
            initialize_layerwise_reload)

        if self._bracket is not None:
            raise ReceiveError(f"version {version}: a reload bracket is already open", version)
        bracket = ExitStack()
        bracket.enter_context(reload_fixes(self.model))
        try:
            with self._context():
                initialize_layerwise_reload(self.model)
        except BaseException:
            bracket.close()
            raise
        self._bracket = bracket

    def load_weights(self, pairs) -> None:
        with self._context():
            self.model.load_weights(iter(pairs))

    def _close(self) -> None:
        from vllm.model_executor.model_loader.reload import (  # noqa: PLC0415
            finalize_layerwise_reload)

        bracket, self._bracket = self._bracket, None
        if bracket is None:
            return
        try:
            with self._context():
                finalize_layerwise_reload(self.model, self.model_config)
        finally:
            bracket.close()

    def finish_update(self, version: int) -> None:
        self._close()
        self.dirty = False

    def abort_update(self, version: int, dirty: bool) -> None:
        # Closing the bracket puts back every layer that got nothing of the
        # version; layers that got all of theirs keep the new values.
        self._close()
        self.dirty = self.dirty or dirty


@dataclass
class WorkerState:
    """What a worker reports about its updates (``VllmReceiverCore.state``)."""

    rank: int = -1
    applied_version: int = 0       # the version the engine holds (0: as loaded)
    staged_version: int = 0        # received, committed, not yet applied
    dirty: bool = False            # parameters hold no version (streamed abort)
    last_error: str = ""
    seconds_receive: float = 0.0
    seconds_apply: float = 0.0
    bytes: int = 0
    versions: list = field(default_factory=list)


class VllmReceiverCore:
    """A weightcast receiver rank inside one vLLM worker (see the module doc)."""

    def __init__(self, model, vllm_config, model_config=None, device=None):
        self.vllm_config = vllm_config
        self.device = device          # the worker's torch.device (None: CPU)
        self.loader = VllmModelLoader(model, vllm_config, model_config or vllm_config.model_config)
        self.receiver: Receiver | None = None
        self.adapter: EngineAdapter | None = None
        self.state = WorkerState()
        self._session = False

    # ---- lifecycle -------------------------------------------------------
    def set_target(self, model, model_config) -> None:
        self.loader.model, self.loader.model_config = model, model_config

    @staticmethod
    def worker_index(vllm_config) -> int:
        from vllm.distributed.parallel_state import get_world_group  # noqa: PLC0415

        pc = vllm_config.parallel_config
        dp_index = getattr(pc, "data_parallel_index", 0) or 0
        return dp_index * pc.world_size + get_world_group().rank_in_group

    def init(self, info: InitInfo | dict) -> int:
        """Joins the group as rank ``first_rank + worker index``; returns it.
        Calling it again closes the previous receiver first."""
        if isinstance(info, dict):
            try:
                info = InitInfo(**info)
            except TypeError as e:
                raise ValueError(f"weightcast init_info: {e}") from None
        self.close()
        rank = info.first_rank + self.worker_index(self.vllm_config)
        cuda = self.device is not None and getattr(self.device, "type", "") == "cuda"
        if info.staging == "device" and not cuda:
            raise ValueError(f"weightcast rank {rank}: staging 'device' needs a CUDA worker, "
                             f"this one is on {self.device or 'cpu'}")
        expect = None
        if info.check_tensors:
            found = checkpoint_tensors(self.loader.model_config.model,
                                       getattr(self.loader.model_config, "hf_config", None))
            if found is None:
                log.warning("weightcast rank %d: %s is not a local safetensors checkpoint; "
                            "versions are not checked against it", rank,
                            self.loader.model_config.model)
            expect = found
        stager = VersionStager(expect=expect[0] if expect else None,
                               optional=expect[1] if expect else None,
                               reuse=info.staging != "none")
        # On a GPU worker the receive buffers are on its device (NCCL groups);
        # "device" staging keeps the tensors there.
        self.receiver = Receiver(info.rendezvous, rank=rank, token=info.token or None,
                                 timeout_s=info.timeout_s, bind_host=info.bind_host,
                                 lib_path=info.lib_path or None,
                                 cuda_device=(self.device.index or 0) if cuda else 0,
                                 device_tensors=info.staging == "device")
        self.adapter = EngineAdapter(self.receiver, self.loader, chunk_bytes=info.chunk_bytes,
                                     streaming=info.staging == "none", stager=stager)
        self.state = WorkerState(rank=rank)
        log.info("weightcast: worker joined as rank %d of the group at %s (staging %s)", rank,
                 info.rendezvous, info.staging)
        return rank

    def _require_init(self) -> None:
        if self.adapter is None:
            raise ReceiveError("weightcast: init_weight_transfer_engine has not been called")

    def start(self) -> None:
        self._require_init()
        self._session = True
        self.state.staged_version = 0

    def receive(self, update: UpdateInfo | dict) -> int:
        """Takes part in updates until ``update.version`` (or the next one)
        committed; returns it. Raises VersionAborted when the group voted
        it down, ReceiveError on this rank's own failure, TimeoutError when
        nothing came within ``wait_s``."""
        self._require_init()
        if isinstance(update, dict):
            try:
                update = UpdateInfo(**update)
            except TypeError as e:
                raise ValueError(f"weightcast update_info: {e}") from None
        assert self.adapter is not None
        want = update.version
        deadline = time.monotonic() + update.wait_s
        start = time.monotonic()
        while True:
            left = max(0.0, deadline - time.monotonic())
            r = (self.adapter.poll(wait_s=left) if self.adapter.streaming
                 else self.adapter.receive(wait_s=left))
            if r.status == ReceiveStatus.NO_UPDATE:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"weightcast rank {self.state.rank}: no version "
                                       f"{'announced' if not want else want} within "
                                       f"{update.wait_s} s")
                continue
            if r.status == ReceiveStatus.STOPPED:
                raise ReceiveError(f"weightcast rank {self.state.rank}: receiver stopped")
            if want and r.version < want:
                log.info("weightcast rank %d: version %d (%s) before the %d awaited: dropped",
                         self.state.rank, r.version, r.status.name.lower(), want)
                if self.adapter.streaming and r.status == ReceiveStatus.COMMITTED:
                    self.state.applied_version = r.version
                continue
            self.state.dirty = self.loader.dirty
            if r.status in (ReceiveStatus.ABORTED, ReceiveStatus.ERROR):
                self.state.last_error = r.message
                cls = VersionAborted if r.status == ReceiveStatus.ABORTED else ReceiveError
                raise cls(f"weightcast rank {self.state.rank}: version {r.version} "
                          f"{'aborted' if cls is VersionAborted else 'failed'}: {r.message}"
                          + (" (the engine is dirty: it holds part of it)" if r.dirty else ""),
                          r.version, dirty=r.dirty)
            if want and r.version != want:
                raise ReceiveError(f"weightcast rank {self.state.rank}: version {want} was "
                                   f"awaited, the group committed {r.version}", r.version)
            self.state.seconds_receive = time.monotonic() - start
            self.state.bytes = self.adapter.stager.nbytes
            if self.adapter.streaming:
                self.state.applied_version = r.version
                self.state.versions.append(r.version)
            else:
                self.state.staged_version = r.version
            return r.version

    def finish(self) -> int:
        """Applies the staged version (staged mode); returns the version the
        engine holds now."""
        self._require_init()
        assert self.adapter is not None
        if not self._session:
            raise ReceiveError("weightcast: finish without start")
        self._session = False
        if self.adapter.streaming or not self.state.staged_version:
            return self.state.applied_version
        start = time.monotonic()
        version = self.state.staged_version
        self.state.staged_version = 0
        try:
            self.adapter.apply()
        except ReceiveError as e:
            self.state.dirty = self.loader.dirty   # abort_update(dirty=True) set it
            self.state.last_error = str(e)
            raise
        model = self.loader.model
        kept = self.adapter.stager.forget_aliased(
            [*model.parameters(), *model.buffers()])
        if kept:
            log.warning("weightcast rank %d: the engine kept %d staged tensors as its own; "
                        "they get fresh buffers next time", self.state.rank, kept)
        self.state.seconds_apply = time.monotonic() - start
        self.state.applied_version = version
        self.state.dirty = self.loader.dirty
        self.state.versions.append(version)
        return version

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver.close()
        self.receiver = None
        self.adapter = None


def worker_state(worker) -> dict:
    """The weightcast state of one vLLM worker, for ``collective_rpc``
    (``llm.collective_rpc(worker_state)``): on the backend or the extension."""
    from dataclasses import asdict  # noqa: PLC0415

    engine = getattr(worker, "weight_transfer_engine", None)
    core = getattr(engine, "core", None) or getattr(worker, "_weightcast", None)
    if not isinstance(core, VllmReceiverCore):
        raise ReceiveError("this vLLM worker has no weightcast receiver (backend or extension)")
    return asdict(core.state)
