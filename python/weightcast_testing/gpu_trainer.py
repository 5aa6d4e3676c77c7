"""A GPU trainer stand-in for the end-to-end GPU test and benchmark.

Holds a generated Qwen3-MoE model in GPU memory in transformers 5's fused
expert layout (``mlp.experts.gate_up_proj`` [E, 2I, H], ``down_proj``
[E, H, I]), split between ``--senders`` trainer ranks as
MoeModelSpec.split does, and hands each rank's tensors to weightcast the way
a trainer does: CUDA IPC descriptors (weightcast.cuda_ipc), one JSON
document per sender for ``weightcastctl register --descriptors``.

With ``--checkpoint DIR`` it also saves the same bytes as a safetensors
checkpoint (the input of the CPU path, ``weightcast-convert``, that the GPU
path is checked against). Prints READY and keeps the tensors alive until its
standard input closes.

    python -m weightcast_testing.gpu_trainer --workdir W --senders 2 --size large
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import torch

from weightcast_testing.modelgen import MoeModelSpec
from weightcast.cuda_ipc import describe_tensors, descriptors_document

SIZES = {
    # ~2.8 GB of bf16: 4 layers of 64 experts.
    "large": MoeModelSpec(hidden=2048, heads=16, kv_heads=4, head_dim=128, moe_intermediate=768,
                          dense_intermediate=6144, experts=64, experts_per_tok=8, layers=4,
                          vocab=32000),
    "small": MoeModelSpec(hidden=256, heads=4, kv_heads=2, head_dim=64, moe_intermediate=200,
                          dense_intermediate=512, experts=8, experts_per_tok=2, layers=2,
                          vocab=1000),
}


def fused_parts(spec: MoeModelSpec, senders: int) -> list[list[tuple[str, tuple]]]:
    """Each sender's tensors (name, shape) in the fused layout."""
    out = []
    for part in spec.split(senders):
        tensors: list[tuple[str, tuple]] = []
        layers_done = set()
        for name, _, shape in part:
            if ".mlp.experts." not in name:
                tensors.append((name, shape))
                continue
            prefix = name[: name.index(".mlp.experts.")]
            if prefix in layers_done:
                continue
            layers_done.add(prefix)
            e, i, h = spec.experts, spec.moe_intermediate, spec.hidden
            tensors.append((f"{prefix}.mlp.experts.gate_up_proj", (e, 2 * i, h)))
            tensors.append((f"{prefix}.mlp.experts.down_proj", (e, h, i)))
        out.append(tensors)
    return out


def make_tensor(name: str, shape: tuple, device: torch.device) -> torch.Tensor:
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(hashlib.sha256(name.encode()).digest()[:7], "little"))
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * 0.02
    if name.endswith("norm.weight"):
        x += 1.0
    return x.to(torch.bfloat16)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--senders", type=int, default=2)
    ap.add_argument("--size", choices=sorted(SIZES), default="large")
    ap.add_argument("--checkpoint", help="also save the model here (safetensors)")
    ap.add_argument("--device", type=int, default=0)
    args = ap.parse_args()

    spec = SIZES[args.size]
    device = torch.device("cuda", args.device)
    parts = fused_parts(spec, args.senders)
    everything: dict[str, torch.Tensor] = {}
    total = 0
    for s, part in enumerate(parts):
        tensors = {name: make_tensor(name, shape, device) for name, shape in part}
        everything.update(tensors)
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        doc = descriptors_document(describe_tensors(tensors), config=spec.config())
        with open(os.path.join(args.workdir, f"ipc{s}.json"), "w") as f:
            json.dump(doc, f)
    torch.cuda.synchronize()
    if args.checkpoint:
        from safetensors.torch import save_file

        os.makedirs(args.checkpoint, exist_ok=True)
        # Shards of ~1 GB, as a trainer's save would.
        shard, shard_bytes, n = {}, 0, 0
        for name, t in everything.items():
            shard[name] = t.cpu()
            shard_bytes += t.numel() * t.element_size()
            if shard_bytes >= (1 << 30):
                save_file(shard, os.path.join(args.checkpoint, f"model-{n:05d}.safetensors"))
                shard, shard_bytes, n = {}, 0, n + 1
        if shard:
            save_file(shard, os.path.join(args.checkpoint, f"model-{n:05d}.safetensors"))
        with open(os.path.join(args.checkpoint, "config.json"), "w") as f:
            json.dump(spec.config(), f)
    print(f"READY {total}", flush=True)
    sys.stdin.read()  # hold the allocations until the test is done
    return 0


if __name__ == "__main__":
    sys.exit(main())
