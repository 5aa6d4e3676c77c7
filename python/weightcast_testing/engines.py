"""Inference-engine stand-ins for the receiver library's tests: they record
the reload bracket (FORMATS.md section 4) the library drives."""

from __future__ import annotations


class BracketEngine:
    """Records begin / load / finish / abort calls, in order."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    def begin_update(self, version, config_json):
        self.calls.append(("begin", version))

    def load_weights(self, chunk):
        self.calls.append(("load", len(chunk)))

    def finish_update(self, version):
        self.calls.append(("finish", version))

    def abort_update(self, version):
        self.calls.append(("abort", version))
