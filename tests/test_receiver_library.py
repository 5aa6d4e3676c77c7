"""The receiver library through its C API, from Python (ctypes), as an
inference engine embeds it: one begin/finish bracket per version however
many chunks the tensors arrive in, and abort instead of finish when the
group aborts."""

import os
import threading

import numpy as np
import pytest

from weightcast_receiver import EngineAdapter, Receiver, ReceiveStatus
from weightcast_receiver.client import DEFAULT_LIB
from weightcast_testing.modelgen import values


class RecordingEngine:
    """Stands in for a vLLM worker: records the reload bracket."""

    def __init__(self):
        self.calls = []
        self.weights = {}
        self.staged = {}

    def begin_update(self, version, config_json):
        self.calls.append(("begin", version))
        self.staged = {}

    def load_weights(self, chunk):
        self.calls.append(("load", len(chunk)))
        for name, dtype, arr in chunk:
            self.staged[name] = (dtype, arr)

    def finish_update(self, version):
        self.calls.append(("finish", version))
        self.weights = self.staged

    def abort_update(self, version):
        self.calls.append(("abort", version))
        self.staged = {}


@pytest.fixture
def lib():
    if not os.path.exists(DEFAULT_LIB):
        pytest.fail(f"{DEFAULT_LIB} missing: bazel build //receiver:libweightcast_receiver.so")
    return DEFAULT_LIB


def run_in_thread(adapter, results):
    def run():
        for _ in range(2):
            results.append(adapter.poll(wait_s=30))
    t = threading.Thread(target=run)
    t.start()
    return t


def test_engine_gets_one_bracket_per_version_and_exact_bytes(make_cluster, lib):
    c = make_cluster(num_senders=1, num_receivers=1)
    c.parts = c.model.split(1)
    c.start_daemons()
    assert c.init(0).rc == 0
    engine = RecordingEngine()
    receiver = Receiver(f"127.0.0.1:{c.port}", rank=1, token=c.token, timeout_s=10, lib_path=lib)
    adapter = EngineAdapter(receiver, engine, chunk_bytes=64 << 10)
    c.register()
    results = []
    t = run_in_thread(adapter, results)
    for v in (1, 2):
        c.write_version(v)
        assert all(r.rc == 0 for r in c.update(v))
    t.join(timeout=60)
    receiver.close()
    assert [r.status for r in results] == [ReceiveStatus.COMMITTED] * 2
    assert [r.version for r in results] == [1, 2]
    brackets = [x for x in engine.calls if x[0] != "load"]
    assert brackets == [("begin", 1), ("finish", 1), ("begin", 2), ("finish", 2)]
    loads = [x for x in engine.calls if x[0] == "load"]
    assert len(loads) > 2, "several chunks per version, still one bracket"
    assert set(engine.weights) == {n for n, _, _ in c.model.tensors()}
    for name, dtype, shape in c.model.tensors():
        got_dtype, arr = engine.weights[name]
        assert got_dtype == dtype and arr.shape == tuple(shape)
        assert np.array_equal(arr, values(name, dtype, shape, 2)), name


def test_engine_aborts_a_version_the_group_aborts(make_cluster, lib):
    c = make_cluster(num_senders=1, num_receivers=2)
    c.parts = c.model.split(1)
    # Rank 1 (weightcast-recv) corrupts version 2; the Python rank 2 must abort it.
    c.recv_args = {1: ["--test-corrupt-bucket", "0", "--test-fault-version", "2"]}
    c.start_daemons()
    assert c.init(0).rc == 0
    c.start_receiver(1)
    engine = RecordingEngine()
    receiver = Receiver(f"127.0.0.1:{c.port}", rank=2, token=c.token, timeout_s=10, lib_path=lib)
    adapter = EngineAdapter(receiver, engine)
    c.register()
    results = []
    t = run_in_thread(adapter, results)
    for v in (1, 2):
        c.write_version(v)
        res = c.update(v)
        assert [r.rc for r in res] == ([0] if v == 1 else [1]), [r.out + r.err for r in res]
    t.join(timeout=60)
    receiver.close()
    assert [r.status for r in results] == [ReceiveStatus.COMMITTED, ReceiveStatus.ABORTED]
    assert "checksum mismatch" in results[1].message or "voted" in results[1].message
    brackets = [x for x in engine.calls if x[0] != "load"]
    assert brackets == [("begin", 1), ("finish", 1), ("begin", 2), ("abort", 2)]
    name, dtype, shape = c.model.tensors()[0]
    assert np.array_equal(engine.weights[name][1], values(name, dtype, shape, 1))


def test_bad_arguments_are_reported(lib):
    with pytest.raises(RuntimeError, match="timeout"):
        Receiver("127.0.0.1:1", rank=1, timeout_s=0, lib_path=lib)
