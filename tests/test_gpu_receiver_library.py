"""The receiver library on a GPU, from Python, as an inference worker embeds
it (skipped without torch and a CUDA device, so in CI):
- gloo group: versions copied from the received host buckets straight into
  torch parameters, staged (an aborted version leaves them untouched) and in
  place (an aborted version leaves them dirty);
- NCCL group on one GPU: tensors handed over in device memory (DeviceTensor,
  zero copy into torch), copied device to device into torch parameters, and
  into another process's parameters through CUDA IPC handles.
Every parameter is compared byte for byte with the generator's values."""

import json
import os
import subprocess
import sys
import threading

import pytest

from weightcast_testing.cluster import REPO
from weightcast_testing.engines import BracketEngine
from weightcast_testing.modelgen import values

from weightcast_testing.gpu import cuda_torch

torch = cuda_torch()

from weightcast.receiver import (DeviceTensor, EngineAdapter, ParameterTargets,  # noqa: E402
                                 Receiver, ReceiveStatus)
from weightcast.receiver import DEFAULT_LIB  # noqa: E402

TORCH_DTYPES = {"BF16": torch.bfloat16, "F32": torch.float32}


@pytest.fixture
def lib():
    path = os.environ.get("WEIGHTCAST_RECEIVER_LIB", DEFAULT_LIB)
    if not os.path.exists(path):
        pytest.fail(f"{path} missing: bazel build //receiver:libweightcast_receiver.so")
    return path


def raw_bytes(t) -> bytes:
    return t.detach().reshape(-1).view(torch.uint8).cpu().numpy().tobytes()


def torch_params(model):
    return {name: torch.zeros(shape, dtype=TORCH_DTYPES[dtype], device="cuda:0")
            for name, dtype, shape in model.tensors()}


def mismatches(params, model, version):
    return [name for name, dtype, shape in model.tensors()
            if raw_bytes(params[name]) != values(name, dtype, shape, version).tobytes()]


def in_thread(fn, n):
    results = []

    def run():
        for _ in range(n):
            results.append(fn())

    t = threading.Thread(target=run)
    t.start()
    return t, results


@pytest.mark.parametrize("staged", [True, False], ids=["staged", "in_place"])
def test_gloo_versions_land_in_torch_parameters(make_cluster, lib, staged):
    c = make_cluster(num_senders=1, num_receivers=2)
    c.parts = c.model.split(1)
    # Rank 1 corrupts a bucket of version 3: the group aborts it.
    c.recv_args = {1: ["--test-corrupt-bucket", "0", "--test-fault-version", "3"]}
    c.start_daemons()
    assert c.init(0).rc == 0
    c.start_receiver(1)
    params = torch_params(c.model)
    targets = ParameterTargets(device=0, staged=staged, lib_path=lib)
    targets.add_torch(params)
    receiver = Receiver(f"127.0.0.1:{c.port}", rank=2, token=c.token, timeout_s=30, lib_path=lib)
    engine = BracketEngine()
    adapter = EngineAdapter(receiver, engine)
    c.register()
    seen = {}

    def poll():
        r = adapter.poll_into(targets, wait_s=60)
        seen[r.version] = mismatches(params, c.model, r.version)
        return r

    t, results = in_thread(poll, 3)
    for v in (1, 2, 3):
        c.write_version(v)
        assert [r.rc for r in c.update(v)] == ([0] if v < 3 else [1])
    t.join(timeout=120)
    receiver.close()
    assert [r.status for r in results] == [ReceiveStatus.COMMITTED] * 2 + [ReceiveStatus.ABORTED]
    assert seen[1] == [] and seen[2] == [], seen
    assert engine.calls == [("begin", 1), ("finish", 1), ("begin", 2), ("finish", 2),
                            ("begin", 3), ("abort", 3, results[2].dirty)]
    if staged:
        assert not results[2].dirty
        assert mismatches(params, c.model, 2) == [], "an aborted version reached a parameter"
    else:
        assert results[2].dirty


def test_nccl_device_tensors_torch_targets_and_ipc_targets(make_cluster, lib, tmp_path):
    # This process is an NCCL rank on the same GPU as the others: its own host id.
    os.environ.update(NCCL_HOSTID="weightcast-pytest-rank2", NCCL_SOCKET_IFNAME="lo",
                      NCCL_IB_DISABLE="1")
    c = make_cluster(num_senders=1, num_receivers=2, nccl_one_gpu=True, timeout_s=60,
                     init_args={"--transport": "nccl"})
    c.parts = c.model.split(1)
    c.start_daemons()
    assert c.init(0).rc == 0
    c.start_receiver(1, ["--cuda-device", "0"])
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python"))
    worker = subprocess.Popen([sys.executable, "-m", "weightcast_testing.gpu_worker"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        doc = json.loads(worker.stdout.readline())
        receiver = Receiver(f"127.0.0.1:{c.port}", rank=2, token=c.token, timeout_s=60,
                            lib_path=lib, cuda_device=0, device_tensors=True)
        got = {}

        def on_tensor(name, dtype, shape, t):
            assert isinstance(t, DeviceTensor) and t.device == 0, t
            view = t.torch()
            assert view.dtype == TORCH_DTYPES[dtype] and tuple(view.shape) == tuple(shape)
            got[name] = raw_bytes(view)  # .cpu() synchronises before the slot is reused

        params = torch_params(c.model)
        local = ParameterTargets(device=0, staged=True, lib_path=lib)
        local.add_torch(params)
        remote = ParameterTargets(device=0, staged=False, lib_path=lib)
        remote.add_ipc_descriptors(doc)
        assert len(remote) == len(c.model.tensors())
        steps = iter([
            lambda: receiver.next(None, on_tensor, None, None, wait_s=90),
            lambda: receiver.next_into(local, wait_s=90),
            lambda: receiver.next_into(remote, wait_s=90),
        ])
        c.register()
        t, results = in_thread(lambda: next(steps)(), 3)
        for v in (1, 2, 3):
            c.write_version(v)
            res = c.update(v)
            assert [r.rc for r in res] == [0], [r.out + r.err for r in res]
        t.join(timeout=180)
        receiver.close()
        assert [r.status for r in results] == [ReceiveStatus.COMMITTED] * 3, \
            [r.message for r in results]
        for name, dtype, shape in c.model.tensors():
            assert got[name] == values(name, dtype, shape, 1).tobytes(), name
        assert mismatches(params, c.model, 2) == []
        worker.stdin.write("check 3\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "OK"
        for v in (1, 2, 3):
            c.verify(1, v)  # the NCCL receiver process agrees
    finally:
        worker.stdin.close()
        worker.wait(timeout=30)
