"""Drives every sidecar of a weightcast group at once.

    from weightcast.control import GroupConfig
    from weightcast.orchestrator import Orchestrator
    group = Orchestrator(["unix:/run/wc/rank0.sock", "unix:/run/wc/rank1.sock"])
    group.init(GroupConfig(host="10.0.0.1", port=29501, num_senders=2,
                           inference_world_size=4, token=TOKEN))
    ...                                   # each trainer rank registers its tensors
    result = group.update(42, deadline_s=300)

``update`` calls every sender concurrently under one deadline and watches all
of them: the first sender that cannot be reached, refuses, or fails is named
in a ``GroupError`` at once, and the others are aborted so nobody waits out
its collective timeout. ``abort`` aborts all of them and reports each.
Sender ranks are the positions in ``addresses``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import grpc

from weightcast.control import Committed, GroupConfig, Planned, Sidecar, SidecarStatus
from weightcast.errors import ControlError, GroupError, UpdateFailed

__all__ = ["Orchestrator", "GroupUpdate"]

# After one sender reported a failed update, how long the others get to end
# theirs by themselves (they learn of a vote at the same moment) before they
# count as stuck and are aborted.
VOTE_GRACE_S = 5.0


@dataclass
class GroupUpdate:
    """The outcome of one committed group update."""

    version: int
    seconds: float                       # from the first call to the last Committed
    committed: dict[int, Committed] = field(default_factory=dict)   # by sender rank
    planned: dict[int, Planned] = field(default_factory=dict)

    @property
    def receivers(self) -> tuple:
        """What each receiver rank reported publishing (``RankVersion``)."""
        for c in self.committed.values():
            if c.receivers:
                return c.receivers
        return ()

    @property
    def bytes(self) -> int:
        """Payload bytes of the whole update (every sender's part)."""
        if self.planned:
            return next(iter(self.planned.values())).total_bytes
        return sum(c.bytes for c in self.committed.values())


class Orchestrator:
    """The sidecars of one group, sender rank = index in ``addresses``."""

    def __init__(self, addresses: Sequence[str], call_timeout_s: float = 60.0, *,
                 control_token: str | None = None, tls_ca: str | None = None):
        if not addresses:
            raise ValueError("a group needs at least one sidecar address")
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"a sidecar address appears twice: {list(addresses)}")
        self.sidecars = [Sidecar(a, call_timeout_s=call_timeout_s, sender_rank=r,
                                 control_token=control_token, tls_ca=tls_ca)
                         for r, a in enumerate(addresses)]
        self._pool = ThreadPoolExecutor(max_workers=max(2, 2 * len(addresses)),
                                        thread_name_prefix="weightcast-orchestrator")
        self._config: GroupConfig | None = None

    def __len__(self) -> int:
        return len(self.sidecars)

    def _each(self, what: str, fn: Callable[[int, Sidecar], object],
              ranks: Sequence[int] | None = None) -> dict[int, object]:
        """fn on every sidecar (of ``ranks``) concurrently; GroupError naming
        each failure."""
        ranks = range(len(self.sidecars)) if ranks is None else ranks
        futures = {r: self._pool.submit(fn, r, self.sidecars[r]) for r in ranks}
        results, failures, order = {}, {}, []
        for r, f in futures.items():
            try:
                results[r] = f.result()
            except ControlError as e:
                failures[r] = e
                order.append(r)
        if failures:
            raise GroupError(what, failures, order[0])
        return results

    def init(self, config: GroupConfig) -> None:
        """InitBroadcaster on every sender: sender 0 (which serves the
        rendezvous) first, then the others together."""
        if config.num_senders != len(self.sidecars):
            raise ValueError(f"config.num_senders is {config.num_senders}, the group has "
                             f"{len(self.sidecars)} sidecars")
        self._config = config
        self._each("init", lambda r, s: s.init(config, r), ranks=[0])
        self._each("init", lambda r, s: s.init(config, r), ranks=range(1, len(self.sidecars)))

    def register(self, parts: Sequence[dict]) -> dict[int, tuple[int, int]]:
        """RegisterTensors on every sender at once: ``parts[r]`` holds the
        keyword arguments of ``Sidecar.register`` for sender r (descriptor
        dicts, or ``checkpoint_dir=``; ``config=``). For tensors a trainer
        rank owns, its ``TrainerSidecar`` registers them itself. Returns
        rank -> (tensors registered, bytes)."""
        if len(parts) != len(self.sidecars):
            raise ValueError(f"{len(parts)} parts for {len(self.sidecars)} senders")
        return self._each("register", lambda r, s: s.register(**parts[r]))

    def status(self) -> dict[int, SidecarStatus]:
        return self._each("status", lambda r, s: s.status())

    def abort(self) -> dict[int, bool]:
        """Abort on every sender: rank -> whether an update was in flight.
        The next ``update`` initialises them again."""
        return self._each("abort", lambda r, s: s.abort())

    def update(self, version: int, deadline_s: float | None = None,
               new_model: bool = False) -> GroupUpdate:
        """Version ``version`` on every sender at once. Returns when all
        committed. As soon as one sender fails, raises GroupError naming it;
        senders still inside the update then (a refusal or a lost peer left
        them waiting in a collective) are aborted first, and re-initialised
        at the next call. A group that voted the version down ends on every
        sender by itself and needs no abort. ``deadline_s`` bounds the whole
        update (the senders not done by then are named and aborted).
        ``new_model``: the group's tensor set changes with this version."""
        if self._config is not None:
            self._reinit()
        start = time.monotonic()
        deadline = None if deadline_s is None else start + deadline_s
        done = threading.Condition()
        committed: dict[int, Committed] = {}
        planned: dict[int, Planned] = {}
        failures: dict[int, ControlError] = {}
        order: list[int] = []

        def run(r: int, s: Sidecar) -> None:
            try:
                left = None if deadline is None else max(0.001, deadline - time.monotonic())
                for ev in s.update(version, timeout_s=left, new_model=new_model):
                    if isinstance(ev, Planned):
                        planned[r] = ev
                    elif isinstance(ev, Committed):
                        with done:
                            committed[r] = ev
                            done.notify_all()
            except ControlError as e:
                with done:
                    failures[r] = e
                    order.append(r)
                    done.notify_all()

        n = len(self.sidecars)
        for r, s in enumerate(self.sidecars):
            self._pool.submit(run, r, s)

        def settled() -> bool:
            return len(committed) + len(failures) == n

        with done:
            while not failures and len(committed) < n:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                done.wait(timeout=left)
            if len(committed) == n:
                return GroupUpdate(version, time.monotonic() - start, dict(committed),
                                   dict(planned))
            if failures and all(isinstance(failures[r], UpdateFailed) for r in order):
                # The update ran and failed: the others end by themselves
                # within moments (the vote reached everyone) unless stuck.
                done.wait_for(settled, timeout=VOTE_GRACE_S)
            stuck = [r for r in range(n) if r not in committed and r not in failures]
        for r in stuck:
            try:
                self.sidecars[r].abort()
            except ControlError:
                pass
        with done:
            for r in stuck:
                failures[r] = ControlError(
                    self.sidecars[r].address, grpc.StatusCode.ABORTED,
                    f"version {version}: aborted by the orchestrator" + (
                        f" after sender {order[0]} failed" if order else
                        f", not committed within {deadline_s} s"), r)
            if not order:
                order = list(stuck)
            raise GroupError(f"update {version}", dict(failures), order[0])

    def _reinit(self) -> None:
        """Initialises again the senders that report themselves
        uninitialised (aborted, by this orchestrator or elsewhere, or
        restarted), sender 0 first."""
        config = self._config
        assert config is not None
        states = self._each("status", lambda r, s: s.status().state)
        # A sender aborted a moment ago may still be leaving its update.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            busy = [r for r, st in states.items() if st == "updating"]
            if not busy:
                break
            time.sleep(0.05)
            states.update(self._each("status", lambda r, s: s.status().state, ranks=busy))
        again = sorted(r for r, st in states.items() if st == "uninitialized")
        self._each("init (after abort)", lambda r, s: s.init(config, r),
                   ranks=[r for r in again if r == 0])
        self._each("init (after abort)", lambda r, s: s.init(config, r),
                   ranks=[r for r in again if r != 0])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for s in self.sidecars:
            s.close()
