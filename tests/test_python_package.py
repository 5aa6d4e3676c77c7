"""The weightcast Python package without vLLM: it installs with pip into a
clean venv, its stubs match proto/, and the control client, the trainer
sidecar and the orchestrator work against real daemons and receivers."""

import filecmp
import json
import os
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import torch

from weightcast.control import GroupConfig, Sidecar
from weightcast.errors import ControlError, GroupError, SidecarUnavailable
from weightcast.orchestrator import Orchestrator
from weightcast.trainer import TrainerSidecar
from weightcast_testing.cluster import REPO

from safetensors.torch import load_file


def test_committed_stubs_match_the_proto(tmp_path):
    subprocess.run([os.path.join(REPO, "scripts", "gen-python-stubs"), str(tmp_path)],
                   check=True, env=dict(os.environ, WEIGHTCAST_VENV_PYTHON=sys.executable))
    for name in ("control_pb2.py", "control_pb2_grpc.py"):
        fresh = tmp_path / "weightcast" / "v1" / name
        committed = os.path.join(REPO, "python", "weightcast", "v1", name)
        assert filecmp.cmp(fresh, committed, shallow=False), \
            f"{committed} drifted from proto/: run scripts/gen-python-stubs"


def test_pip_installs_the_package_into_a_clean_venv(tmp_path):
    import shutil

    # From a copy: a build writes build/ and *.egg-info beside its sources.
    src = tmp_path / "src"
    shutil.copytree(os.path.join(REPO, "python"), src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", "weightcast_testing"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    # The light dependencies come from pip's cache or PyPI.
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    check = ("import importlib.metadata as m, weightcast, weightcast.control, "
             "weightcast.orchestrator, weightcast.receiver, sys;"
             "eps=[e.value for e in m.entry_points(group='vllm.general_plugins')];"
             "print(weightcast.__version__, eps, weightcast.__file__);"
             "import weightcast.trainer")   # imports without torch; torch only on use
    r = subprocess.run([py, "-c", check], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    version, rest = r.stdout.split(" ", 1)
    assert version == "0.1.0"
    assert "weightcast.vllm.plugin:register" in rest
    assert str(venv) in rest, "imported the installed copy, not the checkout"


@pytest.fixture
def daemons(tmp_path):
    from weightcast_testing.cluster import free_port, spawn_weightcastd

    procs = []

    def start(n):
        addrs = []
        for s in range(n):
            procs.append(spawn_weightcastd(str(tmp_path), s))
            addrs.append(f"unix:{tmp_path}/wc{s}.sock")
        for a in addrs:
            deadline = time.time() + 20
            while True:
                try:
                    Sidecar(a, call_timeout_s=1).status()
                    break
                except ControlError:
                    assert time.time() < deadline, f"{a} did not come up"
                    time.sleep(0.1)
        return addrs, free_port()

    start.procs = procs  # a test may restart one, as a supervisor would
    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def start_recv(tmp_path, port, rank, token, *extra):
    from weightcast_testing.cluster import default_bin_dir

    return subprocess.Popen([os.path.join(default_bin_dir(), "weightcast-recv"),
                             "--rendezvous", f"127.0.0.1:{port}",
                             "--rank-offset", str(rank), "--out", str(tmp_path / f"r{rank}"),
                             "--timeout", "10", *extra], stderr=subprocess.DEVNULL,
                            env={**os.environ, "WEIGHTCAST_TOKEN": token})


def test_control_errors_carry_the_daemons_code_and_message(daemons):
    (addr,), port = daemons(1)
    s = Sidecar(addr)
    with pytest.raises(ControlError) as e:
        list(s.update(1))
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "before InitBroadcaster" in e.value.message and addr in str(e.value)
    with pytest.raises(ControlError) as e:
        s.init(GroupConfig(host="127.0.0.1", port=port, num_senders=1, inference_world_size=1,
                           token="t", bucket_bytes=100), 0)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "bucket_bytes" in e.value.message
    with pytest.raises(ValueError, match="version"):
        list(s.update(-1))
    with pytest.raises(SidecarUnavailable) as e:
        Sidecar("unix:/nonexistent/wc.sock", call_timeout_s=2).status()
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    assert s.status().state == "uninitialized"   # the daemon is still usable


def tiny_module():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.LayerNorm(24),
                            torch.nn.Linear(24, 8, bias=False)).to(torch.bfloat16)
    return m


def received(tmp_path, rank, version):
    path = tmp_path / f"r{rank}" / f"step_{version}"
    deadline = time.time() + 20
    while not path.is_dir():
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)
    index = json.load(open(path / "model.safetensors.index.json"))
    out = {}
    for shard in set(index["weight_map"].values()):
        out.update(load_file(str(path / shard)))
    return out


def test_trainer_sidecar_shares_a_modules_parameters_and_publishes_them(daemons, tmp_path):
    (addr,), port = daemons(1)
    cfg = GroupConfig(host="127.0.0.1", port=port, num_senders=1, inference_world_size=1,
                      token="t", timeout_s=10)
    Sidecar(addr).init(cfg, 0)
    recv = start_recv(tmp_path, port, 1, "t")
    try:
        model = tiny_module()
        sc = TrainerSidecar(addr, shm_dir=str(tmp_path))
        assert sc.register(model, config={"model_type": "dense"}) == 5
        # Shared: the parameters now live in the file the daemon maps.
        files = [f for f in os.listdir(tmp_path) if f.startswith("weightcast-")]
        assert len(files) == 1
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for version in (1, 2, 3):
            out = model(torch.randn(4, 16, dtype=torch.bfloat16)).float().pow(2).mean()
            out.backward()
            opt.step()
            opt.zero_grad()
            if version == 2:
                # A reallocated parameter (new storage) is picked up by name.
                model[2].weight.data = model[2].weight.data.clone() * 2
            if version == 3:
                # A new shape: that tensor is registered again, alone.
                model[1].bias = torch.nn.Parameter(torch.ones(24, dtype=torch.bfloat16) * 3)
            pub = sc.publish(version, wait="committed", progress=False)
            assert pub.committed.version == version and pub.planned.num_tensors == 5
            got = received(tmp_path, 1, version)
            want = {k: v.detach() for k, v in model.state_dict().items()}
            assert set(got) == set(want)
            for k in want:
                assert torch.equal(got[k].view(torch.int16), want[k].view(torch.int16)), (version, k)
        with pytest.raises(ControlError) as e:
            sc.publish(3, wait="committed")   # not newer: refused before it starts
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 3 does not increase" in e.value.message
        sc.close()
    finally:
        recv.terminate()
        recv.wait(timeout=10)


def test_publish_returns_at_source_released_and_reports_the_commit(daemons, tmp_path):
    (addr,), port = daemons(1)
    Sidecar(addr).init(GroupConfig(host="127.0.0.1", port=port, num_senders=1,
                                   inference_world_size=1, token="t", timeout_s=10,
                                   bucket_bytes=4096), 0)
    recv = start_recv(tmp_path, port, 1, "t")
    try:
        sc = TrainerSidecar(addr, shm_dir=str(tmp_path))
        w = torch.arange(64 << 10, dtype=torch.float32)
        sc.register({"w": w})
        pub = sc.publish(1, wait="released", progress=False)
        assert pub.released_at is not None
        committed = pub.result(timeout_s=30)
        assert committed.version == 1 and pub.planned.own_buckets > 10
        assert pub.released_at <= pub.committed_at
        assert torch.equal(received(tmp_path, 1, 1)["w"], w)
        with pytest.raises(ValueError, match="wait="):
            sc.publish(2, wait="sometime")
    finally:
        recv.terminate()
        recv.wait(timeout=10)


def test_a_nan_parameter_is_refused_by_name_unless_the_group_allows_non_finite(daemons, tmp_path):
    """GroupConfig.allow_non_finite reaches the daemon: off (the default), a
    NaN in a parameter fails the publish with the tensor and element named and
    nothing is published; on, the same bytes arrive."""
    import dataclasses

    (addr,), port = daemons(1)
    control = Sidecar(addr)
    cfg = GroupConfig(host="127.0.0.1", port=port, num_senders=1, inference_world_size=1,
                      token="t", timeout_s=10)
    assert cfg.request(0).allow_non_finite is False
    control.init(cfg, 0)
    recv = start_recv(tmp_path, port, 1, "t")
    try:
        sc = TrainerSidecar(addr, shm_dir=str(tmp_path))
        w = torch.ones(64, 32, dtype=torch.float32)
        w[5, 7] = float("nan")
        sc.register({"w": w, "b": torch.zeros(8, dtype=torch.bfloat16)})
        with pytest.raises(ControlError) as e:
            sc.publish(1, wait="committed", progress=False)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "tensor 'w': non-finite value (NaN) at element 167" in e.value.message
        time.sleep(0.5)
        assert not (tmp_path / "r1" / "step_1").exists()
        control.abort()
        control.init(dataclasses.replace(cfg, allow_non_finite=True), 0)
        sc.publish(2, wait="committed", progress=False)
        got = received(tmp_path, 1, 2)["w"]
        assert torch.equal(got.view(torch.int32), w.view(torch.int32))  # the NaN's bits too
        sc.close()
    finally:
        recv.terminate()
        recv.wait(timeout=10)


def test_orchestrator_names_a_failing_sender_at_once_and_recovers(daemons, tmp_path):
    addrs, port = daemons(2)
    group = Orchestrator(addrs)
    cfg = GroupConfig(host="127.0.0.1", port=port, num_senders=2, inference_world_size=1,
                      token="t", timeout_s=30)
    group.init(cfg)
    from weightcast.shm import ShmTensorFile

    files = [ShmTensorFile.create(str(tmp_path / f"p{s}.bin"), [(n, "F32", (8,))])
             for s, n in enumerate("ab")]
    for f, value in zip(files, (1.0, 2.0)):
        f.array(f.names()[0])[...] = value
    with pytest.raises(GroupError) as e:   # a bad part is refused, naming its sender
        group.register([{"tensors": files[0].descriptors()["tensors"]},
                        {"tensors": [dict(files[1].descriptors()["tensors"][0], dtype="Q")]}])
    assert e.value.first == 1 and "unknown dtype" in str(e.value)
    assert group.register([{"tensors": f.descriptors()["tensors"]} for f in files]) == {
        0: (1, 32), 1: (1, 32)}
    sidecars = []
    recv = start_recv(tmp_path, port, 2, "t")
    try:
        assert group.update(1, deadline_s=60).version == 1
        # Sender 1 is aborted from elsewhere: the orchestrator finds it
        # uninitialised, initialises it again, and the group re-forms.
        Sidecar(addrs[1]).abort()
        assert group.update(2, deadline_s=60).version == 2
        # Sender 1's sidecar restarts (as a supervisor restarts it): the
        # orchestrator initialises it again, but nothing is registered
        # there, so sender 1 refuses the update at once; sender 0, left
        # waiting in a collective for it, is aborted at once rather than
        # after its 30 s timeout. The error names sender 1 first.
        from weightcast_testing.cluster import spawn_weightcastd

        daemons.procs[1].kill()
        daemons.procs[1].wait()
        daemons.procs[1] = spawn_weightcastd(str(tmp_path), 1)
        deadline = time.time() + 20
        while True:
            try:
                Sidecar(addrs[1], call_timeout_s=1).status()
                break
            except ControlError:
                assert time.time() < deadline
                time.sleep(0.1)
        t0 = time.monotonic()
        with pytest.raises(GroupError) as e:
            group.update(3, deadline_s=60)
        assert time.monotonic() - t0 < 15
        assert e.value.first == 1, e.value
        assert e.value.failures[1].code == grpc.StatusCode.FAILED_PRECONDITION
        assert "sender 1 has no tensors registered" in str(e.value)
        # Sender 0's abort was the senders' business: the receiver is still there.
        assert recv.poll() is None
        # Registered again, it takes part: the orchestrator initialises the
        # sender it aborted, and goes on.
        Sidecar(addrs[1]).register(files[1].descriptors()["tensors"])
        assert group.update(3, deadline_s=60).version == 3
        got = received(tmp_path, 2, 3)
        assert torch.equal(got["a"], torch.ones(8)) and torch.equal(got["b"], torch.full((8,), 2.0))
        # A sender that cannot be reached is named before any update starts.
        other = Orchestrator([addrs[0], "unix:/nonexistent.sock"], call_timeout_s=2)
        other._config = cfg
        t0 = time.monotonic()
        with pytest.raises(GroupError) as e:
            other.update(4, deadline_s=60)
        assert time.monotonic() - t0 < 10
        assert e.value.first == 1 and isinstance(e.value.failures[1], SidecarUnavailable)
        assert group.status()[0].last_committed_version == 3
    finally:
        recv.terminate()
        recv.wait(timeout=10)
        for sc in sidecars:
            sc.close()


def test_version_stager_checks_tensors_against_the_engines_model():
    from weightcast.errors import ReceiveError
    from weightcast.receiver import VersionStager

    expect = {"a": ("BF16", (2, 3)), "b": ("F32", (4,)), "lm_head.weight": ("BF16", (2, 3))}
    st = VersionStager(expect=expect, optional={"lm_head.weight"})
    with pytest.raises(ReceiveError, match="version 1 has 1 tensors, the engine's model 2"):
        st.begin(1, 1, "{}")
    st.begin(2, 2, "{}")
    with pytest.raises(ReceiveError, match=r"'a' is F16 \[2, 3\], the engine's model has BF16"):
        st.add("a", "F16", (2, 3), np.zeros((2, 3), np.float16))
    with pytest.raises(ReceiveError, match="'c' is not a tensor of the engine's model"):
        st.add("c", "F32", (4,), np.zeros(4, np.float32))
    st.begin(3, 2, "{}")
    st.add("a", "BF16", (2, 3), np.arange(6, dtype=np.uint16).reshape(2, 3))
    with pytest.raises(ReceiveError, match=r"1 tensors of the engine's model are missing, e.g. \['b'\]"):
        st.add("lm_head.weight", "BF16", (2, 3), np.zeros((2, 3), np.uint16))
    st.begin(4, 2, "{}")
    a = st.add("a", "BF16", (2, 3), np.arange(6, dtype=np.uint16).reshape(2, 3))
    b = st.add("b", "F32", (4,), np.array([1, 2, 3, 4], np.float32))
    assert a.dtype == torch.bfloat16 and a.view(torch.int16).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert b.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert [n for n, _ in st.tensors] == ["a", "b"] and st.nbytes == 12 + 16
    # Reused by name across versions; an engine that kept one as its own
    # parameter gets it out of reuse, so the next version cannot land in it.
    st.begin(5, 2, "{}")
    assert st.add("a", "BF16", (2, 3), np.zeros((2, 3), np.uint16)).data_ptr() == a.data_ptr()
    st.add("b", "F32", (4,), np.zeros(4, np.float32))
    kept = torch.nn.Parameter(b[1:])   # a view of the staged buffer
    assert st.forget_aliased([kept, torch.zeros(3)]) == 1
    st.begin(6, 2, "{}")
    st.add("a", "BF16", (2, 3), np.zeros((2, 3), np.uint16))
    fresh = st.add("b", "F32", (4,), np.full(4, 9, np.float32))
    assert fresh.data_ptr() != b.data_ptr() and kept.tolist() == [0.0, 0.0, 0.0]


def test_the_light_modules_import_without_grpc_or_torch():
    """What the GPU machine's tests and a receiver-only user import needs
    neither grpcio nor torch (they are imported where used)."""
    code = """
import builtins
real = builtins.__import__
def guard(name, *a, **k):
    if name.split('.')[0] in ('grpc', 'google', 'torch', 'vllm'):
        raise ImportError('blocked ' + name)
    return real(name, *a, **k)
builtins.__import__ = guard
import weightcast, weightcast.receiver, weightcast.cuda_ipc, weightcast.shm, weightcast.errors
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
