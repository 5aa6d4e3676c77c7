"""The training loop's side of weightcast: one client per trainer rank, for
the weightcastd sidecar next to it.

    from weightcast.trainer import TrainerSidecar
    sidecar = TrainerSidecar("unix:/run/wc/rank0.sock")
    sidecar.register(model)                 # an nn.Module, or a name -> tensor mapping
    for step in range(steps):
        train_step(model, optimizer)
        sidecar.publish(step + 1)           # returns once the daemon read every byte

How tensors are handed over:
- CPU tensors go through one shared-memory file (``shm_dir``, /dev/shm by
  default) that the daemon maps read-only. For an ``nn.Module`` the
  parameters and buffers are moved into that file (``share=True``): the
  optimizer then updates them in place there and ``publish`` copies nothing.
  Tensors given as a mapping are copied into the file at each ``publish``.
- CUDA tensors are read in place through CUDA IPC handles
  (``weightcast.cuda_ipc``).
- Names are the trainer's own (a transformers model's ``state_dict()``
  names, its fused experts included); the sidecar's ``GroupConfig``
  (``source_layout="fused"`` for transformers 5) says how to read them.
- Before each publish the tensors are looked up again: a reallocated tensor
  (new storage, as after ``param.data = ...``) is copied into its slot, or for
  CUDA re-registered; a tensor whose shape or dtype changed, and a new one,
  is registered again, alone. A tensor that went away re-registers all.

``publish(version, wait="released")`` returns when this sender's sources
were read (the trainer may write its weights again), ``wait="committed"``
when the whole group committed the version; either way the returned
``Publication`` tells the outcome, and a failure raises ``ControlError`` /
``UpdateFailed`` with the daemon's code and message. Progress shows as a
tqdm bar when stderr is a terminal (``progress=True`` / ``False`` forces it).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Collection, Mapping

from weightcast.control import BucketSent, Committed, Planned, Sidecar, SourceReleased
from weightcast.errors import WeightcastError

__all__ = ["TrainerSidecar", "Publication"]


def _torch():
    import torch  # noqa: PLC0415 - the trainer helper needs torch, the package does not

    return torch


@dataclass
class _Entry:
    """One registered tensor: where it is read from, as registered."""

    name: str
    dtype: str                  # safetensors name
    shape: tuple
    ptr: int                    # data_ptr of the tensor registered / its shm slot
    cuda: bool
    slot: Any = None            # CPU: torch view of the shm slot


class Publication:
    """One ``publish``: its events arrive on a thread of its own.
    ``result(timeout)`` waits for the group's outcome: the ``Committed``
    event, or raises the sender's error."""

    def __init__(self, sidecar: Sidecar, version: int, timeout_s: float | None, progress: bool,
                 new_model: bool = False):
        self.version = version
        self.planned: Planned | None = None
        self.committed: Committed | None = None
        self.error: BaseException | None = None
        # time.monotonic() when the sources were released / the group committed
        self.released_at: float | None = None
        self.committed_at: float | None = None
        self._released = threading.Event()
        self._done = threading.Event()
        self._bar = None
        self._progress = progress
        self._new_model = new_model
        self._thread = threading.Thread(target=self._run, args=(sidecar, timeout_s),
                                        name=f"weightcast-publish-{version}", daemon=True)
        self._thread.start()

    def _run(self, sidecar: Sidecar, timeout_s: float | None) -> None:
        try:
            for ev in sidecar.update(self.version, timeout_s=timeout_s,
                                     new_model=self._new_model):
                if isinstance(ev, Planned):
                    self.planned = ev
                    if self._progress:
                        from tqdm import tqdm  # noqa: PLC0415 - only with a progress bar

                        self._bar = tqdm(total=ev.own_buckets, unit="bucket",
                                         desc=f"weightcast v{self.version}", leave=False)
                elif isinstance(ev, BucketSent) and self._bar is not None:
                    self._bar.update(1)
                elif isinstance(ev, SourceReleased):
                    self.released_at = time.monotonic()
                    self._released.set()
                elif isinstance(ev, Committed):
                    self.committed_at = time.monotonic()
                    self.committed = ev
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.error = e
        finally:
            if self._bar is not None:
                self._bar.close()
            self._released.set()
            self._done.set()

    def wait_released(self, timeout_s: float | None = None) -> None:
        """Returns once this sender read its last source byte (or the update
        ended); raises the update's error if it failed before that."""
        if not self._released.wait(timeout_s):
            raise TimeoutError(f"version {self.version}: sources not released in {timeout_s} s")
        if self.error is not None and self.committed is None:
            raise self.error

    def result(self, timeout_s: float | None = None) -> Committed:
        if not self._done.wait(timeout_s):
            raise TimeoutError(f"version {self.version}: no outcome in {timeout_s} s")
        if self.error is not None:
            raise self.error
        assert self.committed is not None
        return self.committed

    def done(self) -> bool:
        return self._done.is_set()


class TrainerSidecar:
    """The client of one trainer rank's weightcastd (see the module doc).
    Not thread-safe: one training loop drives it."""

    def __init__(self, address: str, *, shm_dir: str = "/dev/shm", call_timeout_s: float = 60.0,
                 sender_rank: int | None = None, control_token: str | None = None,
                 tls_ca: str | None = None):
        self.sidecar = Sidecar(address, call_timeout_s=call_timeout_s, sender_rank=sender_rank,
                               control_token=control_token, tls_ca=tls_ca)
        self.shm_dir = shm_dir
        self._source: Any = None
        self._names: set[str] | None = None
        self._share = False
        self._config: dict | None = None
        self._entries: dict[str, _Entry] = {}
        self._files: list = []          # (path, torch mapping) of the CPU slots' files
        self._last: Publication | None = None

    # ---- registration ----------------------------------------------------
    def register(self, tensors: Any, *, names: Collection[str] | None = None,
                 config: Mapping[str, Any] | None = None, share: bool = True) -> int:
        """Registers ``tensors`` (an ``nn.Module``: its ``state_dict`` names;
        or a mapping name -> torch tensor) with the sidecar, replacing what
        was registered before. ``names``: only these (this rank's part, when
        several sidecars split one model). ``config``: the model's
        config.json (default: a transformers model's ``config``). ``share``:
        move a module's CPU parameters and buffers into the shared-memory
        file (zero copies at publish). Returns the number of tensors
        registered."""
        torch = _torch()
        self._source = tensors
        self._names = None if names is None else set(names)
        self._share = share and isinstance(tensors, torch.nn.Module)
        if config is None and isinstance(tensors, torch.nn.Module):
            hf = getattr(tensors, "config", None)
            if hf is not None and hasattr(hf, "to_json_string"):
                config = json.loads(hf.to_json_string())
        self._config = dict(config) if config is not None else None
        self._release_files()
        current = self._current()
        if not current:
            raise ValueError("nothing to register: no tensors")
        self._register(current, replace=True)
        return len(self._entries)

    def _current(self) -> dict[str, Any]:
        torch = _torch()
        src = self._source
        if isinstance(src, torch.nn.Module):
            # keep_vars: the Parameter objects themselves, so they can be
            # moved into shared memory.
            current = dict(src.state_dict(keep_vars=True))
        else:
            current = dict(src)
        if self._names is not None:
            unknown = self._names - set(current)
            if unknown:
                raise KeyError(f"names not among the tensors: {sorted(unknown)[:5]}")
            current = {n: t for n, t in current.items() if n in self._names}
        return current

    def _register(self, tensors: dict[str, Any], replace: bool) -> None:
        from weightcast.cuda_ipc import describe_tensors  # noqa: PLC0415

        torch = _torch()
        descs: list[dict] = []
        cpu: dict[str, Any] = {}
        cuda: dict[str, Any] = {}
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"tensor {name!r}: a torch.Tensor, got {type(t).__name__}")
            (cuda if t.is_cuda else cpu)[name] = t
        if cuda:
            for d in describe_tensors({n: t.detach() for n, t in cuda.items()}):
                t = cuda[d["name"]]
                self._entries[d["name"]] = _Entry(d["name"], d["dtype"], tuple(t.shape),
                                                  t.data_ptr(), True)
                descs.append(d)
        if cpu:
            descs += self._place_in_shm(cpu)
        self.sidecar.register(descs, replace=replace, config=self._config)

    def _place_in_shm(self, tensors: dict[str, Any]) -> list[dict]:
        """Copies CPU tensors into slots of a new shared-memory file (one
        slot per distinct tensor object: tied weights share it) and, when
        sharing, points them at their slots."""
        from weightcast.cuda_ipc import safetensors_dtype  # noqa: PLC0415
        from weightcast.shm import ShmTensorFile  # noqa: PLC0415

        torch = _torch()
        first_name: dict[int, str] = {}
        specs = []
        for name, t in tensors.items():
            if id(t) in first_name:
                continue
            first_name[id(t)] = name
            specs.append((name, safetensors_dtype(t.dtype), tuple(t.shape)))
        path = os.path.join(self.shm_dir, f"weightcast-{os.getpid()}-{uuid.uuid4().hex[:8]}.bin")
        f = ShmTensorFile.create(path, specs)
        slots = dict(f.slots)
        by_first = {d["name"]: d for d in f.descriptors()["tensors"]}
        f.close()
        # torch maps the file itself (MAP_SHARED): the slots are views that
        # live as long as anything refers to them, with no buffer to close.
        storage = torch.from_file(path, shared=True, size=os.path.getsize(path),
                                  dtype=torch.uint8)
        self._files.append((path, storage))
        descs = []
        with torch.no_grad():
            for name, t in tensors.items():
                owner = first_name[id(t)]
                s = slots[owner]
                if s.nbytes == 0:
                    slot = torch.empty(t.shape, dtype=t.dtype)
                else:
                    slot = storage[s.offset:s.offset + s.nbytes].view(t.dtype).view(t.shape)
                if owner == name:
                    slot.copy_(t.detach())
                    if self._share:
                        t.data = slot
                d = dict(by_first[owner], name=name)
                descs.append(d)
                self._entries[name] = _Entry(name, d["dtype"], tuple(t.shape), slot.data_ptr(),
                                             False, slot)
        return descs

    def sync(self) -> None:
        """Brings the registration up to date with the tensors as they are
        now (see the module doc); copies unshared CPU tensors into their
        slots. ``publish`` calls it; call it yourself when an orchestrator
        starts the update instead."""
        from weightcast.cuda_ipc import safetensors_dtype  # noqa: PLC0415

        torch = _torch()
        current = self._current()
        if set(self._entries) - set(current):  # the registry cannot drop single names
            self._release_files()
            self._register(current, replace=True)
            return
        changed: dict[str, Any] = {}
        with torch.no_grad():
            for name, t in current.items():
                e = self._entries.get(name)
                same_spec = (e is not None and e.shape == tuple(t.shape)
                             and e.dtype == safetensors_dtype(t.dtype) and e.cuda == t.is_cuda)
                if not same_spec:
                    changed[name] = t
                elif e.cuda:
                    if t.data_ptr() != e.ptr:
                        changed[name] = t
                elif t.data_ptr() != e.ptr:
                    e.slot.copy_(t.detach())
                    if self._share:
                        t.data = e.slot
        if changed:
            self._register(changed, replace=False)

    def _release_files(self) -> None:
        """Forgets the registration and removes its files. Tensors still
        pointing into a file keep its pages (the mapping lives as long as
        they do); the daemon is told of new files before it reads again."""
        self._entries.clear()
        for path, _ in self._files:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._files.clear()

    # ---- updates ---------------------------------------------------------
    def publish(self, version: int, *, wait: str = "released", timeout_s: float | None = None,
                progress: bool | None = None, new_model: bool = False) -> Publication:
        """Broadcasts ``version`` of the registered tensors (this rank's part
        of it; every sender of the group publishes the same version).
        ``wait``: "released" (return once this sender read its sources),
        "committed" (once the group committed) or "none". Raises the
        daemon's error if the update fails before ``wait`` is met.
        ``new_model``: this version changes the model's tensor set (every
        rank of the group passes the same; sender 0's is the one read)."""
        if wait not in ("released", "committed", "none"):
            raise ValueError(f"wait={wait!r}: 'released', 'committed' or 'none'")
        if self._source is None:
            raise WeightcastError("publish before register")
        if self._last is not None and not self._last.done():
            raise WeightcastError(f"version {self._last.version} is still being published")
        self.sync()
        if progress is None:
            progress = sys.stderr.isatty()
        pub = Publication(self.sidecar, version, timeout_s, progress, new_model)
        self._last = pub
        if wait == "released":
            pub.wait_released(timeout_s)
        elif wait == "committed":
            pub.result(timeout_s)
        return pub

    def status(self):
        return self.sidecar.status()

    def close(self) -> None:
        """Removes the shared-memory files (shared parameters keep their
        pages until they are freed). The sidecar keeps running."""
        self._release_files()
        self.sidecar.close()

