"""The receiver library through its C API, from Python (ctypes), as an
inference engine embeds it: one begin/finish bracket per version however
many chunks the tensors arrive in, and abort instead of finish when the
group aborts."""

import ctypes
import os
import threading

import numpy as np
import pytest
import torch

from weightcast.receiver import (EngineAdapter, ParameterTargets, Receiver, ReceiveStatus,
                                 VersionStager)
from weightcast.receiver import DEFAULT_LIB, _load
from weightcast_testing.engines import BracketEngine, RecordingEngine
from weightcast_testing.modelgen import MoeModelSpec, values


@pytest.fixture
def lib():
    if not os.path.exists(DEFAULT_LIB):
        pytest.fail(f"{DEFAULT_LIB} missing: bazel build //receiver:libweightcast_receiver.so")
    return DEFAULT_LIB


def run_in_thread(adapter, results, versions=2):
    def run():
        for _ in range(versions):
            results.append(adapter.poll(wait_s=30))
    t = threading.Thread(target=run)
    t.start()
    return t


def raw(tensor) -> np.ndarray:
    """A torch tensor's bytes as the generator's raw numpy holder."""
    return tensor.contiguous().view(-1).view(torch.uint8).numpy()


def start_one_sender(c, lib, rank, engine, **adapter_args):
    c.parts = c.model.split(1)
    c.start_daemons()
    assert c.init(0).rc == 0
    receiver = Receiver(f"127.0.0.1:{c.port}", rank=rank, token=c.token, timeout_s=10,
                        lib_path=lib)
    return receiver, EngineAdapter(receiver, engine, **adapter_args)


def test_engine_gets_one_bracket_per_version_and_exact_bytes(make_cluster, lib):
    c = make_cluster(num_senders=1, num_receivers=1)
    engine = RecordingEngine()
    receiver, adapter = start_one_sender(c, lib, 1, engine, chunk_bytes=64 << 10)
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
    assert engine.brackets() == [("begin", 1), ("finish", 1), ("begin", 2), ("finish", 2)]
    loads = [x for x in engine.calls if x[0] == "load"]
    assert len(loads) > 2, "several chunks per version, still one bracket"
    assert set(engine.weights) == {n for n, _, _ in c.model.tensors()}
    for name, dtype, shape in c.model.tensors():
        t = engine.weights[name]
        assert isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16, name
        assert tuple(t.shape) == tuple(shape), name
        assert raw(t).tobytes() == values(name, dtype, shape, 2).tobytes(), name


def test_nothing_of_a_version_the_group_aborts_reaches_the_engine(make_cluster, lib):
    c = make_cluster(num_senders=1, num_receivers=2)
    # Rank 1 (weightcast-recv) corrupts version 2; the Python rank 2 must abort it.
    c.recv_args = {1: ["--test-corrupt-bucket", "0", "--test-fault-version", "2"]}
    engine = RecordingEngine()
    receiver, adapter = start_one_sender(c, lib, 2, engine, chunk_bytes=64 << 10)
    c.start_receiver(1)
    c.register()
    results = []
    t = run_in_thread(adapter, results, versions=3)
    for v in (1, 2, 3):
        c.write_version(v)
        res = c.update(v)
        assert [r.rc for r in res] == ([1] if v == 2 else [0]), [r.out + r.err for r in res]
    t.join(timeout=60)
    receiver.close()
    assert [r.status for r in results] == [ReceiveStatus.COMMITTED, ReceiveStatus.ABORTED,
                                           ReceiveStatus.COMMITTED]
    assert "checksum mismatch" in results[1].message or "voted" in results[1].message
    # Staged: no begin, no load of version 2 (the group voted it down first).
    assert engine.brackets() == [("begin", 1), ("finish", 1), ("begin", 3), ("finish", 3)]
    name, dtype, shape = c.model.tensors()[0]
    assert raw(engine.weights[name]).tobytes() == values(name, dtype, shape, 3).tobytes()


def test_streaming_loads_before_the_vote_and_reports_the_engine_dirty(make_cluster, lib):
    c = make_cluster(num_senders=1, num_receivers=2)
    # Rank 1 corrupts version 2; rank 2 receives all of it intact, streams
    # it into the engine, and learns at the vote that it is not a version.
    c.recv_args = {1: ["--test-corrupt-bucket", "0", "--test-fault-version", "2"]}
    engine = RecordingEngine()
    receiver, adapter = start_one_sender(c, lib, 2, engine, chunk_bytes=16 << 10,
                                         streaming=True, stager=VersionStager(reuse=False))
    c.start_receiver(1)
    c.register()
    results = []
    t = run_in_thread(adapter, results, versions=3)
    for v in (1, 2, 3):
        c.write_version(v)
        c.update(v)
    t.join(timeout=60)
    receiver.close()
    assert [(r.status, r.dirty) for r in results] == [
        (ReceiveStatus.COMMITTED, False), (ReceiveStatus.ABORTED, True),
        (ReceiveStatus.COMMITTED, False)]
    brackets = engine.brackets()
    assert brackets == [("begin", 1), ("finish", 1), ("begin", 2), ("abort", 2, True),
                        ("begin", 3), ("finish", 3)]
    v2 = engine.calls[engine.calls.index(("begin", 2)):engine.calls.index(("abort", 2, True))]
    assert any(x[0] == "load" for x in v2), "streamed: chunks before the vote"
    name, dtype, shape = c.model.tensors()[-1]
    assert raw(engine.weights[name]).tobytes() == values(name, dtype, shape, 3).tobytes()


def test_a_streaming_adapter_refuses_reused_buffers(lib):
    with pytest.raises(ValueError, match="reuse"):
        EngineAdapter(None, RecordingEngine(), streaming=True, stager=VersionStager(reuse=True))


def test_bad_arguments_are_reported(lib):
    with pytest.raises(RuntimeError, match="timeout"):
        Receiver("127.0.0.1:1", rank=1, timeout_s=0, lib_path=lib)


def test_receiver_refuses_a_negative_cuda_device(lib):
    with pytest.raises(RuntimeError, match="cuda_device -1 is negative"):
        Receiver("127.0.0.1:1", rank=1, timeout_s=5, cuda_device=-1, lib_path=lib)


def test_parameter_targets_refuse_bad_input_naming_the_tensor(lib):
    with pytest.raises(ValueError, match="cuda_device -2: a device ordinal, or -1 for host memory"):
        ParameterTargets(device=-2, lib_path=lib)
    t = ParameterTargets(device=0, lib_path=lib)
    with pytest.raises(ValueError, match="tensor 'w': null pointer for 8 bytes"):
        t.add("w", 0, 8)
    with pytest.raises(ValueError, match="a tensor name"):
        t.add("", 0x1000, 8)
    with pytest.raises(ValueError, match="tensor 'h': CUDA IPC handle of 10 bytes, expected 64"):
        t.add_ipc("h", b"x" * 10, 1024, 0, 8)
    with pytest.raises(ValueError, match=r"tensor 'h': bytes \[1020, \+8\) outside its allocation"):
        t.add_ipc("h", b"x" * 64, 1024, 1020, 8)
    # A well-formed handle that cannot be opened (here: no GPU; elsewhere: a
    # stale handle) is refused at once, naming the tensor.
    with pytest.raises(ValueError, match="tensor 'h': "):
        t.add_ipc("h", b"x" * 64, 1024, 0, 8)
    with pytest.raises(ValueError, match="tensor 'd': no cuda_ipc location"):
        t.add_ipc_descriptors({"tensors": [{"name": "d", "dtype": "BF16", "shape": [2]}]})
    with pytest.raises(ValueError, match="tensor 'd': unknown dtype 'Q7'"):
        t.add_ipc_descriptors([{"name": "d", "dtype": "Q7", "shape": [2], "cuda_ipc": {}}])
    assert len(t) == 0
    t.add("w", 0x1000, 8)
    t.add("w", 0x2000, 8)  # again: replaces
    t.add("empty", 0, 0)
    assert len(t) == 2
    with pytest.raises(ValueError, match="vllm layout: tp rank 2 of 2"):
        t.vllm_layout(tp_rank=2, tp_size=2)
    with pytest.raises(ValueError, match="numpy arrays are host memory"):
        t.add_numpy({"x": np.zeros(3)})
    t.close()
    # The C API refuses a mode the binding never sends.
    c_lib = _load(lib)
    err = ctypes.create_string_buffer(256)
    assert not c_lib.wc_targets_create(0, 7, err, len(err))
    assert b"mode 7: expected WC_TARGETS_STAGED (0) or WC_TARGETS_IN_PLACE (1)" in err.value
    host = ParameterTargets(device=-1, lib_path=lib)
    with pytest.raises(ValueError, match="tensor 'h': CUDA IPC targets need targets on a GPU"):
        host.add_ipc("h", b"x" * 64, 1024, 0, 8)
    with pytest.raises(ValueError, match="tensor 'v': not a writable C-contiguous"):
        host.add_numpy({"v": np.zeros((4, 4))[:, 1]})
    host.add_numpy({"v": np.zeros((4, 4))})
    assert len(host) == 1


def test_targets_that_cannot_take_a_version_vote_it_down_and_the_group_stays_usable(
        make_cluster, lib):
    """Rank 2 embeds the library with parameter targets. Version 1: one
    tensor has no target; version 2: one target is a byte short. (The
    pointers are fake: both are refused before any copy, on any machine.)
    Each is refused by name, aborted for the whole group (rank 1 publishes
    nothing), the engine sees begin/abort, and version 3 commits everywhere."""
    c = make_cluster(num_senders=1, num_receivers=2)
    c.parts = c.model.split(1)
    c.start_daemons()
    assert c.init(0).rc == 0
    c.start_receiver(1)
    receiver = Receiver(f"127.0.0.1:{c.port}", rank=2, token=c.token, timeout_s=10, lib_path=lib)
    engine = BracketEngine()
    adapter = EngineAdapter(receiver, engine)
    tensors = c.model.tensors()
    missing = ParameterTargets(device=0, lib_path=lib)
    short = ParameterTargets(device=0, lib_path=lib)
    last = len(tensors) - 1
    for i, (name, dtype, shape) in enumerate(tensors):
        nbytes = int(np.prod(shape)) * (2 if dtype == "BF16" else 4)
        short.add(name, 0x10000 * (i + 1), nbytes - (i == last))  # never dereferenced
        if i > 0:
            missing.add(name, 0x10000 * (i + 1), nbytes)
    r = receiver.next(None, lambda *a: None, None, None, wait_s=-1)
    assert r.status == ReceiveStatus.ERROR and "wait_s must be >= 0" in r.message
    other_device = ParameterTargets(device=1, lib_path=lib)
    r = receiver.next_into(other_device, wait_s=0)
    assert r.status == ReceiveStatus.ERROR
    assert "targets are on device 1, the receiver's buffers on device 0" in r.message
    c.register()
    results = []

    def run():
        results.append(adapter.poll_into(missing, wait_s=30))
        results.append(adapter.poll_into(short, wait_s=30))
        results.append(adapter.poll(wait_s=30))

    t = threading.Thread(target=run)
    t.start()
    for v in (1, 2, 3):
        c.write_version(v)
        res = c.update(v)
        assert [r.rc for r in res] == ([1] if v < 3 else [0]), [r.out + r.err for r in res]
    t.join(timeout=60)
    receiver.close()
    assert [r.status for r in results] == [ReceiveStatus.ABORTED, ReceiveStatus.ABORTED,
                                           ReceiveStatus.COMMITTED], [r.message for r in results]
    first = tensors[0][0]
    assert f"tensor '{first}' has no target parameter on this rank" in results[0].message
    name, dtype, shape = tensors[last]
    nbytes = int(np.prod(shape)) * (2 if dtype == "BF16" else 4)
    assert f"tensor '{name}': {nbytes} bytes arrive, its target has {nbytes - 1}" in \
        results[1].message
    assert not results[0].dirty and not results[1].dirty
    assert engine.brackets() == [("begin", 1), ("abort", 1, False), ("begin", 2),
                                 ("abort", 2, False), ("begin", 3), ("finish", 3)]
    assert not os.path.exists(f"{c.receiver_out(1)}/step_1")
    assert not os.path.exists(f"{c.receiver_out(1)}/step_2")
    c.verify(1, 3)


@pytest.mark.parametrize("fp8", [False, True], ids=["bf16", "fp8"])
def test_host_targets_in_the_vllm_layout_equal_what_the_checkpoint_receiver_writes(
        make_cluster, lib, fp8):
    """A CPU engine's parameters in vLLM's FusedMoE layout of TP rank 1/2 and
    EP rank 1/3, filled by the library (copy tables, staged then in place)
    from 2 senders, equal byte for byte what weightcast-recv --layout vllm
    (the checkpoint path) writes for the same rank and version."""
    # I = 256 so that FP8's I_tp is a multiple of 128.
    model = MoeModelSpec(hidden=72, heads=6, kv_heads=2, head_dim=12, moe_intermediate=256,
                         dense_intermediate=136, experts=6, experts_per_tok=2, layers=2,
                         vocab=250)
    c = make_cluster(num_senders=2, num_receivers=2, model=model, timeout_s=20,
                     init_args={"--quantization": "fp8-block"} if fp8 else {})
    layout = {"tp_rank": 1, "tp_size": 2, "ep_rank": 1, "ep_size": 3}
    c.recv_args = {2: ["--layout", "vllm", "--tp-rank", "1", "--tp-size", "2",
                       "--ep-rank", "1", "--ep-size", "3"]}
    c.start_daemons()
    for s in range(2):
        assert c.init(s).rc == 0
    c.start_receiver(2)
    receiver = Receiver(f"127.0.0.1:{c.port}", rank=3, token=c.token, timeout_s=20, lib_path=lib)
    c.register()
    # Version 1 tells this engine its parameters' names and shapes (as a real
    # engine knows them from its model): the checkpoint receiver's tensors.
    results = []

    def first():
        results.append(receiver.next(None, lambda *a: None, None, None, wait_s=30))

    t = threading.Thread(target=first)
    t.start()
    c.write_version(1)
    assert all(r.rc == 0 for r in c.update(1))
    t.join(timeout=60)
    assert results[0].status == ReceiveStatus.COMMITTED, results[0].message
    shapes, _ = c.load(2, 1)
    assert any(n.endswith("experts.w13_weight") for n in shapes)
    assert any(n.endswith("w13_weight_scale_inv") for n in shapes) == fp8
    params = {n: np.zeros_like(a) for n, a in shapes.items()}
    staged = ParameterTargets(device=-1, staged=True, lib_path=lib)
    staged.vllm_layout(**layout)
    staged.add_numpy(params)
    in_place = ParameterTargets(device=-1, staged=False, lib_path=lib)
    in_place.vllm_layout(**layout)
    in_place.add_numpy(params)
    engine = BracketEngine()
    adapter = EngineAdapter(receiver, engine)
    got = {}

    def rest():
        for v, targets in ((2, staged), (3, in_place)):
            results.append(adapter.poll_into(targets, wait_s=30))
            got[v] = {n: a.tobytes() for n, a in params.items()}

    t = threading.Thread(target=rest)
    t.start()
    for v in (2, 3):
        c.write_version(v)
        res = c.update(v)
        assert all(r.rc == 0 for r in res), [r.err for r in res]
    t.join(timeout=60)
    receiver.close()
    assert [r.status for r in results] == [ReceiveStatus.COMMITTED] * 3, \
        [r.message for r in results]
    assert engine.calls == [("begin", 2), ("finish", 2), ("begin", 3), ("finish", 3)]
    for v in (2, 3):
        want, _ = c.load(2, v)
        assert set(want) == set(got[v])
        for name, arr in want.items():
            assert got[v][name] == arr.tobytes(), f"{name} differs at version {v}"
