"""The GPU data plane end to end, on one GPU (skipped without torch and a
CUDA device, so in CI): a trainer process holds a generated ~2.8 GB
Qwen3-MoE model in GPU memory in the fused expert layout and registers it
through CUDA IPC with 2 sender daemons; 3 receivers take the update over
NCCL (each process its own NCCL_HOSTID), with expert expansion and block
FP8 done by the GPU kernels. Every receiver's checkpoint must equal, byte
for byte, what the CPU path (weightcast-convert over the same bytes saved
as safetensors) makes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from weightcast_testing.cluster import REPO, Cluster

from weightcast_testing.gpu import cuda_torch

torch = cuda_torch()

from safetensors import safe_open  # noqa: E402

SIZE = os.environ.get("WEIGHTCAST_GPU_MODEL", "large")


def read_checkpoint(path: str) -> dict[str, bytes]:
    index = json.load(open(os.path.join(path, "model.safetensors.index.json")))
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(os.path.join(path, shard), framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                out[name] = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return out


@pytest.fixture
def trainer(tmp_path):
    ckpt = tmp_path / "trainer_ckpt"
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python"))
    p = subprocess.Popen([sys.executable, "-m", "weightcast_testing.gpu_trainer", "--workdir",
                          str(tmp_path), "--senders", "2", "--size", SIZE, "--checkpoint",
                          str(ckpt)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=env)
    line = p.stdout.readline()
    assert line.startswith("READY"), line
    yield p, int(line.split()[1]), ckpt
    p.stdin.close()
    p.wait(timeout=60)


def test_two_senders_three_receivers_fp8_expansion_over_nccl_equal_the_cpu_path(trainer, tmp_path):
    proc, total_bytes, ckpt = trainer
    assert SIZE != "large" or total_bytes >= 2 << 30
    c = Cluster(workdir=str(tmp_path / "cluster"), num_senders=2, num_receivers=3,
                bucket_bytes=64 << 20, timeout_s=120, nccl_one_gpu=True,
                init_args={"--transport": "nccl", "--source-layout": "fused",
                           "--quantization": "fp8-block"})
    try:
        c.start()
        for s in range(2):
            r = c.ctl(s, "register", "--descriptors", str(tmp_path / f"ipc{s}.json"))
            assert r.rc == 0, r.err
        for version in (1, 2):
            results = c.update(version)
            assert all(r.rc == 0 for r in results), [r.err for r in results]
            print(f"version {version}:", [r.out.strip().splitlines()[-1] for r in results])
        # Each sender's own GPU memory: two bucket slots, the pass-through
        # slot for the other sender's buckets, and small tables; never a
        # copy of the model (the trainer's tensors are read in place).
        bucket = (64 << 20) + 32  # the largest bucket and its trailer
        for s in range(2):
            st = json.loads(c.ctl(s, "status", "--json").out)
            peak = st["device_memory_peak_bytes"]
            print(f"sender {s}: GPU memory peak {peak / 2**20:.1f} MiB "
                  f"({peak / (2 * bucket):.3f} x 2 buckets)")
            # (The slots are sized to this sender's largest bucket: at least
            # most of one.)
            assert 96 << 20 <= peak <= 3 * bucket + (16 << 20), peak
        # The CPU path over the same bytes.
        oracle = tmp_path / "oracle"
        p = subprocess.run([c.bin("weightcast-convert"), "--in", str(ckpt), "--out", str(oracle),
                            "--weight-version", "2", "--source-layout", "fused", "--quantization",
                            "fp8-block"], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        want = read_checkpoint(str(oracle / "step_2"))
        assert any(k.endswith("experts.63.down_proj.weight_scale_inv") for k in want) or SIZE != "large"
        for rank in (2, 3, 4):
            got = read_checkpoint(c.wait_for_step(rank, 2, timeout=120))
            assert set(got) == set(want), sorted(set(got) ^ set(want))[:5]
            bad = [k for k in want if got[k] != want[k]]
            assert not bad, f"rank {rank}: {len(bad)} tensors differ, e.g. {bad[:3]}"
            cfg = json.load(open(os.path.join(c.receiver_out(rank), "step_2", "config.json")))
            assert cfg["quantization_config"]["weight_block_size"] == [128, 128]
    finally:
        c.stop()
