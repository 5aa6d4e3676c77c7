"""The control API of one weightcastd sidecar, from Python.

``Sidecar`` is a typed client of the ``weightcast.v1.Broadcaster`` gRPC
service (stubs generated from ``proto/``: ``weightcast.v1.control_pb2`` and
``control_pb2_grpc``). Every call has a deadline; every refusal raises a
``ControlError`` carrying the daemon's status code and message.

    from weightcast.control import GroupConfig, Sidecar
    s = Sidecar("unix:/run/wc/rank0.sock")
    s.init(GroupConfig(host="10.0.0.1", port=29501, num_senders=2,
                       inference_world_size=4, token=TOKEN), sender_rank=0)
    s.register(descriptors, config=model_config)
    for event in s.update(7):
        print(event)                      # Planned, BucketSent, SourceReleased, Committed

The trainer helper (``weightcast.trainer``) and the orchestrator
(``weightcast.orchestrator``) are built on this class.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import grpc

from weightcast.errors import ControlError, SidecarUnavailable, UpdateFailed
from weightcast.v1 import control_pb2, control_pb2_grpc

__all__ = ["GroupConfig", "Sidecar", "SidecarStatus", "Planned", "BucketSent", "SourceReleased",
           "Committed", "control_pb2", "control_pb2_grpc"]

# Where the control token (TCP daemons) and the group token are read from
# when not given.
CONTROL_TOKEN_ENV = "WEIGHTCAST_CONTROL_TOKEN"
TOKEN_ENV = "WEIGHTCAST_TOKEN"

# How long a unary call may take (the daemon answers them at once; Init of
# a non-zero sender waits for the rendezvous of sender 0 to answer).
DEFAULT_CALL_TIMEOUT_S = 60.0


@dataclass
class GroupConfig:
    """What every sender of a group is initialised with (InitBroadcaster),
    but its own rank. See proto/weightcast/v1/control.proto for each field.

    ``family``: model family (empty: the registered config's model_type);
    ``source_layout``: how the trainer holds experts (``per-expert``,
    ``fused`` as transformers 5's state_dict, ``stacked``); ``target``: what
    goes on the wire (``hf`` per-expert keys, ``hf-fused``);
    ``quantization``: ``none`` or ``fp8-block``; ``allow_non_finite``: send
    NaN / inf weights as they are (default: a version holding one is refused
    with the tensor and element named, and receivers keep the previous one)."""

    host: str
    port: int
    num_senders: int
    inference_world_size: int
    token: str = field(default_factory=lambda: os.environ.get(TOKEN_ENV, ""))  # required
    timeout_s: float = 0.0          # 0: the daemon's default (120 s)
    transport: str = "gloo"
    bucket_bytes: int = 0           # 0: the daemon's default (64 MiB)
    data_host: str = ""
    cuda_device: int = 0
    family: str = ""
    source_layout: str = ""
    target: str = ""
    quantization: str = ""
    scale_rule: str = ""
    power_of_two_scales: bool = False
    allow_non_finite: bool = False

    def request(self, sender_rank: int) -> control_pb2.InitBroadcasterRequest:
        q = control_pb2.Quantization(method=self.quantization, scale_rule=self.scale_rule,
                                     power_of_two_scales=self.power_of_two_scales)
        fmt = control_pb2.FormatOptions(family=self.family, source_layout=self.source_layout,
                                        target=self.target, quantization=q)
        return control_pb2.InitBroadcasterRequest(
            host=self.host, port=self.port, sender_rank=sender_rank,
            num_senders=self.num_senders, inference_world_size=self.inference_world_size,
            timeout_s=self.timeout_s, transport=self.transport, format=fmt,
            bucket_bytes=self.bucket_bytes, token=self.token, data_host=self.data_host,
            cuda_device=self.cuda_device, allow_non_finite=self.allow_non_finite)


@dataclass(frozen=True)
class Planned:
    num_buckets: int
    own_buckets: int
    total_bytes: int
    num_tensors: int


@dataclass(frozen=True)
class BucketSent:
    index: int
    num_buckets: int
    bytes: int
    root: int


@dataclass(frozen=True)
class SourceReleased:
    """Every source byte of this sender was read: the trainer may write again."""


@dataclass(frozen=True)
class RankVersion:
    """What one receiver rank publishes: ``version`` (0: none known) and,
    when it failed to publish the committed version, ``error``."""
    rank: int
    version: int
    error: str = ""


def _rank_versions(msgs) -> tuple[RankVersion, ...]:
    return tuple(RankVersion(m.rank, m.version, m.error) for m in msgs)


@dataclass(frozen=True)
class Committed:
    version: int
    bytes: int
    seconds: float
    receivers: tuple[RankVersion, ...] = ()   # every receiver rank published it


@dataclass(frozen=True)
class SidecarStatus:
    state: str                      # "uninitialized", "idle", "updating"
    last_committed_version: int
    last_error: str
    updates_committed: int
    updates_failed: int
    bytes_sent: int
    registered_tensors: int
    rank: int
    world_size: int
    generation: int
    receivers: tuple[RankVersion, ...] = ()   # each receiver's last published version
    # The GPU data plane's own memory in the daemon (not the CUDA context's
    # or NCCL's): device bytes now and at the peak, pinned host bytes' peak.
    device_memory_bytes: int = 0
    device_memory_peak_bytes: int = 0
    pinned_memory_peak_bytes: int = 0


def descriptor_proto(d: Mapping[str, Any]) -> control_pb2.TensorDescriptor:
    """A TensorDescriptor from its dict form (what weightcast.shm and
    weightcast.cuda_ipc make: ``{"name", "dtype", "shape", "shm": {...}}`` or
    ``"cuda_ipc": {"ipc_handle": bytes or base64, ...}``)."""
    out = control_pb2.TensorDescriptor(name=d["name"], dtype=d["dtype"],
                                       shape=[int(x) for x in d["shape"]])
    if "shm" in d:
        out.shm.path = d["shm"]["path"]
        out.shm.offset = int(d["shm"].get("offset", 0))
    elif "cuda_ipc" in d:
        ipc = d["cuda_ipc"]
        handle = ipc["ipc_handle"]
        out.cuda_ipc.ipc_handle = base64.b64decode(handle) if isinstance(handle, str) else handle
        out.cuda_ipc.offset = int(ipc.get("offset", 0))
        out.cuda_ipc.device = int(ipc.get("device", 0))
        out.cuda_ipc.allocation_bytes = int(ipc.get("allocation_bytes", 0))
    else:
        raise ValueError(f"tensor {d['name']!r}: no location (shm or cuda_ipc)")
    return out


class Sidecar:
    """A client of one weightcastd. ``address``: ``unix:/path/to.sock`` (the
    daemon admits its own user, root and its ``--control-group``) or
    ``host:port``, where every call carries the daemon's control token
    (``control_token``, default ``$WEIGHTCAST_CONTROL_TOKEN``) and, off
    loopback, goes over TLS verified with ``tls_ca`` (PEM file). Thread-safe:
    calls may come from several threads (an update stream on one, status or
    abort on another)."""

    def __init__(self, address: str, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
                 sender_rank: int | None = None, *, control_token: str | None = None,
                 tls_ca: str | None = None):
        if not address:
            raise ValueError("a sidecar address is required (unix:/path or host:port)")
        self.address = address
        self.sender_rank = sender_rank
        self.call_timeout_s = call_timeout_s
        self._metadata: tuple[tuple[str, str], ...] = ()
        if address.startswith("unix:"):
            self._channel = grpc.insecure_channel(address)
        else:
            token = control_token if control_token is not None else os.environ.get(
                CONTROL_TOKEN_ENV, "")
            if token:
                self._metadata = (("authorization", f"Bearer {token}"),)
            if tls_ca:
                with open(tls_ca, "rb") as f:
                    creds = grpc.ssl_channel_credentials(root_certificates=f.read())
                self._channel = grpc.secure_channel(address, creds)
            else:
                self._channel = grpc.insecure_channel(address)
        self._stub = control_pb2_grpc.BroadcasterStub(self._channel)

    # ---- errors ----------------------------------------------------------
    def _error(self, e: grpc.RpcError) -> ControlError:
        code = e.code() if callable(getattr(e, "code", None)) else grpc.StatusCode.UNKNOWN
        message = e.details() if callable(getattr(e, "details", None)) else str(e)
        cls = SidecarUnavailable if code == grpc.StatusCode.UNAVAILABLE else ControlError
        return cls(self.address, code, message or "", self.sender_rank)

    def _call(self, method, request, timeout_s: float | None):
        try:
            return method(request, timeout=timeout_s or self.call_timeout_s,
                          metadata=self._metadata)
        except grpc.RpcError as e:
            raise self._error(e) from None

    # ---- the service -----------------------------------------------------
    def init(self, config: GroupConfig, sender_rank: int,
             timeout_s: float | None = None) -> tuple[int, int]:
        """InitBroadcaster. Returns (this sender's rank, world size)."""
        self.sender_rank = sender_rank
        r = self._call(self._stub.InitBroadcaster, config.request(sender_rank), timeout_s)
        return r.rank, r.world_size

    def register(self, tensors: Sequence[Mapping[str, Any]] = (), *, checkpoint_dir: str = "",
                 replace: bool = False, config: Mapping[str, Any] | str | None = None,
                 timeout_s: float | None = None) -> tuple[int, int]:
        """RegisterTensors: descriptor dicts (see ``descriptor_proto``) or a
        checkpoint directory. ``config``: the model's config.json (a dict or
        its JSON text), sent with every update. Returns (tensors registered
        in total, their bytes)."""
        req = control_pb2.RegisterTensorsRequest(
            tensors=[descriptor_proto(d) for d in tensors], checkpoint_dir=checkpoint_dir,
            replace=replace)
        if config is not None:
            req.config_json = config if isinstance(config, str) else json.dumps(config)
        r = self._call(self._stub.RegisterTensors, req, timeout_s)
        return r.registered, r.total_bytes

    def update(self, version: int, timeout_s: float | None = None, new_model: bool = False
               ) -> Iterator[Planned | BucketSent | SourceReleased | Committed]:
        """Update: yields the progress events and ends after Committed; a
        Failed event raises UpdateFailed, a refusal ControlError.
        ``timeout_s``: deadline of the whole stream (None: none beyond the
        daemon's own per-collective timeouts). Leaving the iterator early
        does not cancel the update in the daemon (Abort does).
        ``new_model`` (read on sender 0): this version may change the
        tensor set; otherwise receivers refuse one that differs from the
        committed model's."""
        if not isinstance(version, int) or version < 1 or version >= 1 << 63:
            raise ValueError(f"version {version!r}: an integer in [1, 2^63)")
        stream = self._stub.Update(control_pb2.UpdateRequest(version=version, new_model=new_model),
                                   timeout=timeout_s, metadata=self._metadata)
        try:
            for ev in stream:
                kind = ev.WhichOneof("event")
                if kind == "planned":
                    p = ev.planned
                    yield Planned(p.num_buckets, p.own_buckets, p.total_bytes, p.num_tensors)
                elif kind == "bucket":
                    b = ev.bucket
                    yield BucketSent(b.index, b.num_buckets, b.bytes, b.root)
                elif kind == "source_released":
                    yield SourceReleased()
                elif kind == "committed":
                    c = ev.committed
                    yield Committed(c.version, c.bytes, c.seconds, _rank_versions(c.receivers))
                    return
                elif kind == "failed":
                    f = ev.failed
                    raise UpdateFailed(self.address, status_code(f.code), f.message,
                                       f.version, self.sender_rank,
                                       _rank_versions(f.receivers))
        except grpc.RpcError as e:
            raise self._error(e) from None
        finally:
            stream.cancel()
        raise ControlError(self.address, grpc.StatusCode.UNKNOWN,
                           f"update {version}: the stream ended without an outcome",
                           self.sender_rank)

    def status(self, timeout_s: float | None = None) -> SidecarStatus:
        r = self._call(self._stub.GetStatus, control_pb2.GetStatusRequest(), timeout_s)
        return SidecarStatus(r.state, r.last_committed_version, r.last_error,
                             r.updates_committed, r.updates_failed, r.bytes_sent,
                             r.registered_tensors, r.rank, r.world_size, r.generation,
                             _rank_versions(r.receivers), r.device_memory_bytes,
                             r.device_memory_peak_bytes, r.pinned_memory_peak_bytes)

    def abort(self, timeout_s: float | None = None) -> bool:
        """Abort: cancels the update in flight (True if there was one) and
        leaves the daemon uninitialised; registrations are kept."""
        return self._call(self._stub.Abort, control_pb2.AbortRequest(), timeout_s).aborted_update

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Sidecar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def status_code(value: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a google.rpc.Code number."""
    for c in grpc.StatusCode:
        if c.value[0] == value:
            return c
    return grpc.StatusCode.UNKNOWN
