"""The exceptions of the weightcast package.

Every error a sidecar reports keeps the daemon's gRPC status code and message
(which name the tensor, rank or bucket involved) and says which sidecar it
came from, so a caller can act on the code and a person can read the message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # grpc only where the control API is used
    import grpc


class WeightcastError(RuntimeError):
    """Base of every error raised by this package."""


class ControlError(WeightcastError):
    """A sidecar (weightcastd) refused or failed a call.

    ``code``: the daemon's ``grpc.StatusCode`` (INVALID_ARGUMENT for bad
    input, FAILED_PRECONDITION for a call in the wrong state, UNAVAILABLE /
    DEADLINE_EXCEEDED / ABORTED for peers and timeouts); ``address``: the
    sidecar; ``sender_rank``: its rank when known."""

    def __init__(self, address: str, code: grpc.StatusCode, message: str,
                 sender_rank: int | None = None):
        self.address = address
        self.code = code
        self.message = message
        self.sender_rank = sender_rank
        who = f"sender {sender_rank} ({address})" if sender_rank is not None else address
        super().__init__(f"{who}: {code.name}: {message}")


class SidecarUnavailable(ControlError):
    """The sidecar could not be reached (not running, wrong address)."""


class UpdateFailed(ControlError):
    """An update started and ended in a Failed event. ``version``: the version.

    Usually the group aborted it: nothing was published anywhere and
    ``receivers`` is empty. When the group voted to commit but a receiver
    could not publish, ``committed`` is true and ``receivers`` says which
    version each receiver rank holds (``RankVersion``, with the error of
    those behind); the next update must be a newer version."""

    def __init__(self, address: str, code: grpc.StatusCode, message: str, version: int,
                 sender_rank: int | None = None, receivers: tuple = ()):
        self.version = version
        self.receivers = tuple(receivers)
        super().__init__(address, code, message, sender_rank)

    @property
    def committed(self) -> bool:
        return bool(self.receivers)


class GroupError(WeightcastError):
    """An operation on a group of sidecars failed on some of them.

    ``failures``: sender rank -> the ControlError of that sender, for every
    sender that failed (the first to fail is ``first``)."""

    def __init__(self, what: str, failures: dict[int, ControlError], first: int):
        self.failures = dict(sorted(failures.items()))
        self.first = first
        lines = [f"{what}: sender {first} failed first"]
        lines += [f"  sender {r}: {e.code.name}: {e.message}" for r, e in self.failures.items()]
        super().__init__("\n".join(lines))


class ReceiveError(WeightcastError):
    """An inference rank could not take a version. ``version``: the version
    (0 when none was announced); ``dirty``: the engine's weights were changed
    and do not form any version (reload, or wait for the next version)."""

    def __init__(self, message: str, version: int = 0, dirty: bool = False):
        self.version = version
        self.dirty = dirty
        super().__init__(message)


class VersionAborted(ReceiveError):
    """The group voted the version down; nothing of it reached the engine
    unless ``dirty``."""
