"""Inference-engine stand-ins for the receiver library's tests: they record
the reload bracket (FORMATS.md section 4) the library drives, and what was
loaded (torch tensors, as a real engine gets them)."""

from __future__ import annotations


class BracketEngine:
    """Records begin / load / finish / abort calls, in order."""

    def __init__(self):
        self.calls: list[tuple] = []

    def begin_update(self, version, config_json):
        self.calls.append(("begin", version))

    def load_weights(self, chunk):
        self.calls.append(("load", len(chunk)))

    def finish_update(self, version):
        self.calls.append(("finish", version))

    def abort_update(self, version, dirty):
        self.calls.append(("abort", version, dirty))

    def brackets(self) -> list[tuple]:
        return [c for c in self.calls if c[0] != "load"]


class RecordingEngine(BracketEngine):
    """Also keeps what it loaded: ``weights`` (name -> a copy of the
    tensor) holds the last finished version, ``staged`` the one in progress."""

    def __init__(self):
        super().__init__()
        self.weights: dict = {}
        self.staged: dict = {}

    def begin_update(self, version, config_json):
        super().begin_update(version, config_json)
        self.staged = {}

    def load_weights(self, chunk):
        super().load_weights(chunk)
        for name, tensor in chunk:
            self.staged[name] = tensor.clone()

    def finish_update(self, version):
        super().finish_update(version)
        self.weights = self.staged

    def abort_update(self, version, dirty):
        super().abort_update(version, dirty)
        self.staged = {}
