#!/usr/bin/env python3
"""End-to-end GPU benchmark, every ratio measured in one run on one GPU.

A trainer process holds the generated ~2.6 GB Qwen3-MoE model (fused
experts, bf16) in GPU memory; weightcast moves it from 1 sender daemon to R
receivers over NCCL with expert expansion and block FP8 on the GPU, the
receivers verifying every bucket on the GPU and keeping nothing
(weightcast-recv --discard, so no disk is measured). Then, with the same
ranks, bucket size and model:

  raw       torch.distributed NCCL broadcasts of the same wire bytes in the
            same buckets, no transforms (bench/torch_baseline.py --mode raw):
            the yardstick, goal weightcast <= 1.10x its time;
  baseline  what RL frameworks do today in Python: per-tensor torch ops to
            split experts and quantize, concatenate, broadcast
            (bench/torch_baseline.py --mode baseline): weightcast should win.

It also reads the sender's own peak GPU memory (GetStatus's
device_memory_peak_bytes: bucket slots, kernel scratch, staging) against 2 x
bucket (sender_peak_over_two_buckets, goal about 1), and each process's
whole GPU memory (nvidia-smi, with the CUDA context's and NCCL's share).
Prints one JSON object (and writes it to --json).

    python3 bench/e2e_gpu.py --receivers 3 --reps 5 --json OUT/e2e.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))

from weightcast_testing.cluster import Cluster  # noqa: E402


def gpu_memory_by_pid() -> dict[int, int]:
    """MiB of GPU memory per process, as nvidia-smi reports it."""
    p = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                        "--format=csv,noheader,nounits"], capture_output=True, text=True)
    out = {}
    for line in p.stdout.splitlines():
        parts = [x.strip() for x in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            out[int(parts[0])] = int(parts[1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--receivers", type=int, default=3)
    ap.add_argument("--bucket-bytes", type=int, default=64 << 20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--size", default="large")
    ap.add_argument("--json")
    ap.add_argument("--skip-torch", action="store_true")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="wc-e2e-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ckpt = os.path.join(work, "ckpt")
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python"))
    trainer = subprocess.Popen([sys.executable, "-m", "weightcast_testing.gpu_trainer",
                                "--workdir", work, "--senders", "1", "--size", args.size,
                                "--checkpoint", ckpt], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    line = trainer.stdout.readline()
    if not line.startswith("READY"):
        print("trainer failed", file=sys.stderr)
        return 1
    source_bytes = int(line.split()[1])
    result: dict = {"source_bytes": source_bytes, "receivers": args.receivers,
                    "bucket_bytes": args.bucket_bytes, "reps": args.reps}
    c = Cluster(workdir=os.path.join(work, "cluster"), num_senders=1,
                num_receivers=args.receivers, bucket_bytes=args.bucket_bytes, timeout_s=120,
                nccl_one_gpu=True,
                recv_args={1 + j: ["--discard"] for j in range(args.receivers)},
                init_args={"--transport": "nccl", "--source-layout": "fused",
                           "--quantization": "fp8-block"})
    times, wire = [], None
    try:
        c.start()
        r = c.ctl(0, "register", "--descriptors", os.path.join(work, "ipc0.json"))
        assert r.rc == 0, r.err
        for version in range(1, args.reps + 2):  # version 1 warms up (NCCL init)
            t0 = time.perf_counter()
            res = c.update(version)[0]
            wall = time.perf_counter() - t0
            assert res.rc == 0, res.err
            m = re.search(r"committed version \d+: .* sent in ([0-9.]+) s", res.out)
            if version > 1:
                times.append(float(m.group(1)) if m else wall)
        status = json.loads(c.ctl(0, "status", "--json").out)
        wire = status["bytes_sent"] // (args.reps + 1)
        # The sender's own GPU memory (slots, scratch, staging; not the CUDA
        # context's or NCCL's), counted by the daemon itself.
        result["sender_data_plane_peak_mib"] = status["device_memory_peak_bytes"] / 2**20
        result["sender_peak_over_two_buckets"] = (status["device_memory_peak_bytes"]
                                                 / (2 * args.bucket_bytes))
        mem = gpu_memory_by_pid()
        result["sender_gpu_mib"] = mem.get(c.daemons[0].pid)
        result["receiver_gpu_mib"] = [mem.get(p.pid) for p in c.receivers.values()]
    finally:
        c.stop()
    result["weightcast"] = {"wire_bytes": wire, "seconds_median": statistics.median(times),
                            "seconds_all": times,
                            "gbps": wire / statistics.median(times) / 1e9}
    result["two_buckets_mib"] = 2 * args.bucket_bytes >> 20

    if not args.skip_torch:
        for mode in ("raw", "baseline"):
            out = os.path.join(work, f"{mode}.json")
            p = subprocess.run([sys.executable, os.path.join(REPO, "bench", "torch_baseline.py"),
                                "--model-dir", ckpt, "--receivers", str(args.receivers),
                                "--bucket-bytes", str(args.bucket_bytes), "--fp8", "--expand",
                                "--reps", str(args.reps), "--mode", mode, "--json", out],
                               capture_output=True, text=True, env=env, timeout=900)
            if p.returncode != 0:
                result[mode] = {"error": p.stderr[-2000:]}
                continue
            result[mode] = json.load(open(out))
        wc = result["weightcast"]["seconds_median"]
        for mode in ("raw", "baseline"):
            if "seconds_median" in result.get(mode, {}):
                result[f"weightcast_over_{mode}"] = wc / result[mode]["seconds_median"]
    trainer.stdin.close()
    trainer.wait(timeout=60)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
