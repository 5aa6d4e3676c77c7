#!/usr/bin/env python3
"""PyTorch baseline for weightcast's end-to-end benchmark: a weight update done
the way RL frameworks (prime-rl, verl, SkyRL) do it today, in Python.

What it models
--------------
In those frameworks the trainer's rank 0 holds the whole (gathered) model on
its GPU. For each update it walks the state dict and, with plain torch ops,
  * splits transformers 5's fused experts (`mlp.experts.gate_up_proj`
    [E, 2I, H], `mlp.experts.down_proj` [E, H, I]) into the per-expert
    `mlp.experts.{e}.{gate,up,down}_proj.weight` tensors vLLM's loaders take
    (slicing + .contiguous()),                                     (--expand)
  * block-FP8 quantizes every linear weight for an FP8 inference engine
    (128x128 blocks, e4m3fn codes + float32 scales),                  (--fp8)
  * packs the results, viewed as bytes, into buckets of about --bucket-bytes
    with torch.cat, and
  * dist.broadcasts each bucket from rank 0 to every inference rank.
Transform, pack and send run one after another (nothing overlaps) and nothing
is checksummed. weightcast does the same work with GPU kernels, overlapped
with the broadcast; its goal is an update within 1.10 x a raw ncclBroadcast
of the same bytes. This script measures both reference points on the same
machine, bytes and ranks:

  --mode baseline  the peers' update, as above (the timed part starts with
                   the model already on the sender's device);
  --mode raw       the yardstick: the baseline's exact bucket sizes (hence
                   the same wire bytes) broadcast from preallocated buffers,
                   no transform, no packing: "raw ncclBroadcast".

Ranks: rank 0 is the trainer (sender), ranks 1..R the receivers (inference
ranks). The script spawns all of them itself and rendezvouses them through a
TCP store on 127.0.0.1. With CUDA every rank uses cuda:0 and the `nccl`
backend; as in bench/nccl_bench.cc, each rank process gets its own
NCCL_HOSTID=host<rank> (so NCCL lets several ranks share one GPU, over
sockets: NCCL_SOCKET_IFNAME=lo, NCCL_IB_DISABLE=1). Without CUDA it runs on
the CPU with `gloo`, which is what the tests use.

Receivers learn the bucket layout (entry names, dtypes, shapes, offsets)
once, untimed, through broadcast_object_list, and allocate their buckets up
front. They do not unpack the buckets (an inference engine's load_weights is
outside both this baseline and weightcast's wire time). Entries are packed
back to back with no alignment padding.

Timing: every rank meets at a barrier (after a device synchronize), rank 0
starts its clock, the update runs, then every rank synchronizes its device
and meets at a barrier again; rank 0 stops its clock. One warm-up update,
then --reps timed ones; the median is reported.

Block FP8 rules (docs/FORMATS.md, shared reference FORMATS.md section 2):
  a weight W [N, K] (3-D: per leading index) is cut in 128 x 128 blocks, the
  last ones partial (zero-padded for the amax only); amax in fp32;
  scale = max(amax, 1e-4) / 448 (vLLM's rule, weightcast's default
  `amax-clamp`); q = e4m3fn(clamp(W / scale, -448, 448)) (round to nearest
  even); `<name>_scale_inv` float32 [ceil(N/128), ceil(K/128)] holds scale.
  Quantized: 2-D+ `.weight` tensors except embeddings, lm_head, norms and
  routers (`mlp.gate.weight`, `block_sparse_moe.gate.weight`,
  `shared_expert_gate.weight`, `router`). Fused 3-D experts are quantized
  only once expanded (their names have no `.weight`). A NaN in a block makes
  the whole block NaN here (torch's amax propagates NaN), where weightcast's
  reference ignores NaNs for the amax; peers behave like this script.

Correctness (--verify): after the timed updates, one more update runs in
which receivers zero their buckets before receiving; every rank hashes
(SHA-256) each bucket and rank 0 gathers and compares all hashes with those
of the buckets it sent. With --fp8 rank 0 also checks a few quantized entries
in its buckets byte for byte against an independent numpy/ml_dtypes block
quantizer of the source weight. Any mismatch fails the run.

Usage (a tiny model made by python/weightcast_testing/modelgen.py):
  python3 bench/torch_baseline.py --model-dir /tmp/tiny --generate tiny \\
      --receivers 2 --fp8 --expand --mode baseline --verify --json out.json

Output: one JSON line, also written to --json:
  {"mode", "backend", "ranks", "wire_bytes", "buckets", "seconds_median",
   "seconds_all", "gbps", ...}   gbps = wire_bytes / seconds_median / 1e9
(GB/s of bucket bytes sent once; every receiver gets all of them).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import json
import multiprocessing as mp
import os
import re
import socket
import statistics
import sys
import time
import traceback

import torch
import torch.distributed as dist
import torch.nn.functional as F

E4M3_MAX = 448.0
AMAX_FLOOR = 1e-4
BLOCK = 128

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# transformers 5's fused routed experts, anchored on `mlp.experts.` so that
# `shared_experts.` / `shared_expert.` never match.
FUSED_EXPERTS = re.compile(r"^(?P<prefix>.*\.mlp\.experts)\.(?P<kind>gate_up_proj|down_proj)$")
PER_EXPERT = re.compile(
    r"^(?P<prefix>.*\.mlp\.experts)\.(?P<e>\d+)\.(?P<kind>gate_proj|up_proj|down_proj)\.weight$")
ROUTERS = ("mlp.gate.weight", "block_sparse_moe.gate.weight", "shared_expert_gate.weight")


# ---- the model -----------------------------------------------------------

def natural_key(name: str) -> list:
    """model.layers.10 after model.layers.9 (re.split with a group alternates
    text and digits, so the list elements always compare like with like)."""
    return [int(s) if i % 2 else s for i, s in enumerate(re.split(r"(\d+)", name))]


def fuse_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-expert keys -> transformers 5's fused in-memory layout: what a
    trainer's state_dict() holds. gate_up_proj[e] = cat([gate_e, up_e])."""
    groups: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    out = {}
    for name, t in state.items():
        m = PER_EXPERT.match(name)
        if m:
            groups.setdefault(m["prefix"], {}).setdefault(int(m["e"]), {})[m["kind"]] = t
        else:
            out[name] = t
    for prefix, experts in groups.items():
        n = len(experts)
        if sorted(experts) != list(range(n)) or any(len(k) != 3 for k in experts.values()):
            raise ValueError(f"{prefix}: incomplete experts, cannot fuse")
        out[prefix + ".gate_up_proj"] = torch.stack(
            [torch.cat([experts[e]["gate_proj"], experts[e]["up_proj"]], dim=0) for e in range(n)])
        out[prefix + ".down_proj"] = torch.stack([experts[e]["down_proj"] for e in range(n)])
    return out


def load_state(model_dir: str, device: torch.device, fused: bool) -> list[tuple[str, torch.Tensor]]:
    """Every tensor of the safetensors checkpoint in `model_dir`, in natural
    name order, on `device`. fused=True: per-expert experts are fused first
    (a checkpoint already fused, such as tests/golden/models/*/state_dict, is
    taken as it is)."""
    from safetensors.torch import load_file

    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    if fused:
        state = fuse_experts(state)
        if not any(FUSED_EXPERTS.match(n) for n in state):
            raise ValueError("--expand: the model has no mlp.experts to expand")
    return [(n, state[n].to(device)) for n in sorted(state, key=natural_key)]


def generate_model(model_dir: str, size: str) -> None:
    """Writes modelgen's synthetic Qwen3-MoE model (version 1 values, BF16,
    per-expert keys) and its config.json into model_dir."""
    sys.path.insert(0, os.path.join(REPO, "python"))
    from safetensors.torch import save_file

    from weightcast_testing.modelgen import MoeModelSpec, values

    specs = {
        "tiny": MoeModelSpec.tiny(),
        "default": MoeModelSpec(),
        # ~2.8 GB of BF16: enough to time a GPU update.
        "large": MoeModelSpec(hidden=2048, heads=16, kv_heads=4, head_dim=128,
                              moe_intermediate=768, dense_intermediate=6144, experts=64,
                              experts_per_tok=8, layers=4, vocab=32000),
    }
    spec = specs[size]
    os.makedirs(model_dir, exist_ok=True)
    tensors = {}
    for name, dtype, shape in spec.tensors():
        bits = values(name, dtype, shape, 1)
        tensors[name] = torch.from_numpy(bits).view(torch.bfloat16)
    save_file(tensors, os.path.join(model_dir, "model.safetensors"))
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(spec.config(), f, indent=1)


# ---- the transforms (timed in --mode baseline) ---------------------------

def expand_experts(name: str, t: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Fused [E, 2I, H] gate_up_proj / [E, H, I] down_proj -> per-expert
    contiguous copies; anything else is returned as it is."""
    m = FUSED_EXPERTS.match(name)
    if not m or t.dim() != 3:
        return [(name, t)]
    prefix, out = m["prefix"], []
    if m["kind"] == "gate_up_proj":
        inter = t.shape[1] // 2
        for e in range(t.shape[0]):
            out.append((f"{prefix}.{e}.gate_proj.weight", t[e, :inter].contiguous()))
            out.append((f"{prefix}.{e}.up_proj.weight", t[e, inter:].contiguous()))
    else:
        for e in range(t.shape[0]):
            out.append((f"{prefix}.{e}.down_proj.weight", t[e].contiguous()))
    return out


def quantizable(name: str, t: torch.Tensor) -> bool:
    if not name.endswith(".weight") or t.dim() < 2:
        return False
    if t.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        return False
    if any(s in name for s in ("embed", "lm_head", "norm", "router")):
        return False
    return not name.endswith(ROUTERS)


def quantize_block_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Block FP8 of w [..., N, K]: (e4m3fn codes [..., N, K], float32 scales
    [..., ceil(N/128), ceil(K/128)]), dequant = q * scale per block."""
    n, k = w.shape[-2:]
    lead = w.shape[:-2]
    nb, kb = -(-n // BLOCK), -(-k // BLOCK)
    x = w.float()
    if (nb * BLOCK, kb * BLOCK) != (n, k):
        x = F.pad(x, (0, kb * BLOCK - k, 0, nb * BLOCK - n))
    blocks = x.reshape(*lead, nb, BLOCK, kb, BLOCK)
    amax = blocks.abs().amax(dim=(-3, -1))
    scale = amax.clamp(min=AMAX_FLOOR) / E4M3_MAX
    q = (blocks / scale[..., :, None, :, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    q = q.reshape(*lead, nb * BLOCK, kb * BLOCK)[..., :n, :k].contiguous()
    return q, scale


def transform(name: str, t: torch.Tensor, expand: bool, fp8: bool) -> list[tuple[str, torch.Tensor]]:
    """One source tensor -> the tensors that go on the wire."""
    out = []
    for n, w in (expand_experts(name, t) if expand else [(name, t)]):
        if fp8 and quantizable(n, w):
            q, scale = quantize_block_fp8(w)
            out += [(n, q), (n + "_scale_inv", scale)]
        else:
            out.append((n, w.contiguous()))
    return out


def iter_buckets(state, bucket_bytes: int, expand: bool, fp8: bool):
    """Yields (bucket uint8 tensor, entries) greedily: entries are appended
    until the next one would push the bucket past bucket_bytes (an entry
    larger than that gets a bucket of its own). entries: [name, dtype,
    shape, byte offset]."""
    pending, entries, size = [], [], 0
    for name, t in state:
        for n, w in transform(name, t, expand, fp8):
            b = w.reshape(-1).view(torch.uint8)
            if pending and size + b.numel() > bucket_bytes:
                yield torch.cat(pending), entries
                pending, entries, size = [], [], 0
            entries.append([n, str(w.dtype).removeprefix("torch."), list(w.shape), size])
            pending.append(b)
            size += b.numel()
    if pending:
        yield torch.cat(pending), entries


# ---- an independent FP8 reference (numpy + ml_dtypes) ---------------------

def reference_block_fp8(w):
    """numpy/ml_dtypes block FP8 of a float32 [N, K] array: (uint8 codes,
    float32 scales), one block at a time, NaNs ignored for the amax."""
    import ml_dtypes
    import numpy as np

    n, k = w.shape
    nb, kb = -(-n // BLOCK), -(-k // BLOCK)
    codes = np.empty((n, k), np.uint8)
    scales = np.empty((nb, kb), np.float32)
    for i in range(nb):
        for j in range(kb):
            rows, cols = slice(i * BLOCK, (i + 1) * BLOCK), slice(j * BLOCK, (j + 1) * BLOCK)
            blk = w[rows, cols].astype(np.float32)
            amax = np.float32(np.nanmax(np.abs(blk))) if blk.size else np.float32(0)
            s = np.maximum(amax, np.float32(AMAX_FLOOR)) / np.float32(E4M3_MAX)
            v = (blk / s).astype(np.float32)
            v = np.where(np.isnan(v), v, np.clip(v, -E4M3_MAX, E4M3_MAX)).astype(np.float32)
            codes[rows, cols] = v.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
            scales[i, j] = s
    return codes, scales


def spot_check_entries(plan: list, count: int = 3) -> dict[str, tuple]:
    """Up to `count` quantized entries of the plan (the first, one in the
    middle, the last): {name: (bucket index, entry), name_scale_inv: ...}."""
    quantized = []
    for bi, entries in enumerate(plan):
        names = {e[0] for e in entries}
        quantized += [(bi, e) for e in entries if e[0] + "_scale_inv" in names]
    picks = {quantized[i][1][0] for i in (0, len(quantized) // 2, -1)} if quantized else set()
    where = {}
    for bi, entries in enumerate(plan):
        for e in entries:
            if e[0] in picks or e[0].removesuffix("_scale_inv") in picks:
                where[e[0]] = (bi, e)
    return where


def fp8_spot_check(state, expand: bool, where: dict, buckets: dict) -> list:
    """Compares the entries `where` names (codes and scales) in the sent
    buckets {index: uint8 tensor}, byte for byte, with reference_block_fp8
    of their source weights. Returns the names checked; raises
    AssertionError on a mismatch."""
    wanted = {n for n in where if not n.endswith("_scale_inv")}
    source = {}
    for name, t in state:
        for n, w in (expand_experts(name, t) if expand else [(name, t)]):
            if n in wanted:
                source[n] = w.float().cpu().numpy()

    def entry_bytes(name):
        bi, (_, dtype, shape, off) = where[name]
        nbytes = torch.empty(shape, dtype=getattr(torch, dtype), device="meta").nbytes
        return buckets[bi][off:off + nbytes].cpu().numpy().tobytes()

    for name in sorted(wanted, key=natural_key):
        codes, scales = reference_block_fp8(source[name])
        assert entry_bytes(name) == codes.tobytes(), f"{name}: fp8 codes differ from the reference"
        assert entry_bytes(name + "_scale_inv") == scales.tobytes(), f"{name}: scales differ"
    return sorted(wanted, key=natural_key)


# ---- the ranks ------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def barrier(device: torch.device) -> None:
    sync(device)
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()
    sync(device)


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.cpu().numpy().tobytes()).hexdigest()


def run_rank(rank: int, world: int, args, device: torch.device) -> dict | None:
    # Setup (untimed): the sender loads the model and plans the buckets; the
    # receivers get the plan and allocate their buffers.
    state = None
    if rank == 0:
        state = load_state(args.model_dir, device, fused=args.expand)
        plan, sizes = [], []
        for bucket, entries in iter_buckets(state, args.bucket_bytes, args.expand, args.fp8):
            plan.append(entries)
            sizes.append(bucket.numel())
        bucket = None  # free the planning pass's last bucket
        box = [{"entries": plan, "sizes": sizes, "tensors": len(state)}]
    else:
        box = [None]
    dist.broadcast_object_list(box, src=0, device=device)
    plan, sizes, num_tensors = box[0]["entries"], box[0]["sizes"], box[0]["tensors"]

    if args.mode == "raw":
        if rank == 0:
            state = None  # the raw yardstick sends preallocated random bytes
            g = torch.Generator().manual_seed(1234)
            bufs = [torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g).to(device)
                    for n in sizes]
        else:
            bufs = [torch.empty(n, dtype=torch.uint8, device=device) for n in sizes]
    elif rank != 0:
        bufs = [torch.empty(n, dtype=torch.uint8, device=device) for n in sizes]

    def update(on_bucket=None):
        """One whole update; on_bucket(i, bucket) runs after each broadcast."""
        if rank == 0 and args.mode == "baseline":
            count = 0
            for i, (bucket, _) in enumerate(
                    iter_buckets(state, args.bucket_bytes, args.expand, args.fp8)):
                assert i < len(sizes) and bucket.numel() == sizes[i], \
                    "bucket plan changed between updates"
                dist.broadcast(bucket, src=0)
                if on_bucket:
                    on_bucket(i, bucket)
                count += 1
            assert count == len(sizes), "bucket plan changed between updates"
        else:
            for i, buf in enumerate(bufs):
                dist.broadcast(buf, src=0)
                if on_bucket:
                    on_bucket(i, buf)

    times = []
    for rep in range(args.reps + 1):  # rep 0 warms up
        barrier(device)
        t0 = time.perf_counter()
        update()
        barrier(device)
        if rep:
            times.append(time.perf_counter() - t0)

    verified, fp8_checked = None, []
    if args.verify:
        hashes, kept = [], {}
        spot = spot_check_entries(plan) if rank == 0 and args.mode == "baseline" and args.fp8 else {}
        if rank != 0:
            for buf in bufs:
                buf.zero_()
            sync(device)

        def record(i, bucket):
            if args.corrupt_for_test and rank == world - 1 and i == len(sizes) - 1:
                bucket[-1] ^= 1  # the tests' proof that a bad byte fails the run
            hashes.append(digest(bucket))
            if any(bi == i for bi, _ in spot.values()):
                kept[i] = bucket

        update(record)
        barrier(device)
        gathered = [None] * world  # all_gather_object: supported by every backend
        dist.all_gather_object(gathered, hashes)
        if rank == 0:
            assert len(hashes) == len(sizes)
            for r in range(1, world):
                bad = [i for i, (a, b) in enumerate(zip(hashes, gathered[r])) if a != b]
                assert len(gathered[r]) == len(hashes) and not bad, \
                    f"rank {r}: buckets {bad[:8]} differ from what rank 0 sent"
            if args.mode == "baseline" and args.fp8:
                fp8_checked = fp8_spot_check(state, args.expand, spot, kept)
                assert fp8_checked, "--fp8 but no quantized tensor was sent"
            verified = True

    if rank != 0:
        return None
    median = statistics.median(times)
    wire = sum(sizes)
    return {
        "mode": args.mode,
        "backend": dist.get_backend(),
        "ranks": world,
        "wire_bytes": wire,
        "buckets": len(sizes),
        "seconds_median": median,
        "seconds_all": times,
        "gbps": wire / median / 1e9 if median > 0 else None,
        "receivers": world - 1,
        "bucket_bytes": args.bucket_bytes,
        "fp8": args.fp8,
        "expand": args.expand,
        "source_tensors": num_tensors,
        "wire_tensors": sum(len(e) for e in plan),
        "reps": args.reps,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "verified": verified,
        "fp8_checked": fp8_checked,
    }


def worker(rank: int, world: int, args, port: int, results) -> None:
    # NCCL refuses two ranks on one GPU of one host: give each rank process
    # a host of its own (NCCL then talks over sockets on loopback).
    os.environ["NCCL_HOSTID"] = f"host{rank}"
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_IB_DISABLE", "1")
    backend = args.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(0)
        device = torch.device("cuda", 0)
    else:
        device = torch.device("cpu")
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world,
                            timeout=datetime.timedelta(seconds=args.timeout), **kwargs)
    try:
        result = run_rank(rank, world, args, device)
        if rank == 0:
            results.put(result)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)  # do not wait in destroy_process_group for peers that hang
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True, help="safetensors checkpoint directory")
    p.add_argument("--generate", choices=["tiny", "default", "large"],
                   help="first write modelgen's model of this size into --model-dir "
                        "(skipped when it already holds *.safetensors)")
    p.add_argument("--receivers", type=int, default=2)
    p.add_argument("--bucket-bytes", type=int, default=64 << 20)
    p.add_argument("--fp8", action="store_true", help="block-FP8 quantize linear weights")
    p.add_argument("--expand", action="store_true",
                   help="source experts are fused (per-expert checkpoints are fused at load, "
                        "untimed); split them to per-expert tensors")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--mode", choices=["baseline", "raw"], default="baseline")
    p.add_argument("--backend", choices=["auto", "nccl", "gloo"], default="auto")
    p.add_argument("--verify", action="store_true",
                   help="hash-compare every received bucket (and FP8 spot checks)")
    p.add_argument("--corrupt-for-test", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=600, help="collective timeout, seconds")
    p.add_argument("--json", help="also write the result line here")
    args = p.parse_args(argv)
    if args.receivers < 1 or args.reps < 1 or args.bucket_bytes < 1:
        p.error("--receivers, --reps and --bucket-bytes must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.generate and not glob.glob(os.path.join(args.model_dir, "*.safetensors")):
        generate_model(args.model_dir, args.generate)
    world = 1 + args.receivers
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, world, args, port, results)) for r in range(world)]
    for p in procs:
        p.start()
    failed = False
    while any(p.is_alive() for p in procs):
        if any(p.exitcode not in (None, 0) for p in procs):
            failed = True
            break
        time.sleep(0.05)
    if failed:
        for p in procs:
            if p.is_alive():
                p.terminate()
    for p in procs:
        p.join()
    if failed or any(p.exitcode != 0 for p in procs) or results.empty():
        print("torch_baseline: a rank failed: "
              + ", ".join(f"rank {r} exit {p.exitcode}" for r, p in enumerate(procs)),
              file=sys.stderr)
        return 1
    line = json.dumps(results.get())
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
