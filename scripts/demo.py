#!/usr/bin/env python3
"""The README's first command: a real update, end to end, on this machine.

Generates a Qwen3-MoE style model, starts two weightcastd sender daemons
(each owning part of the tensors, held in a trainer's shared-memory file)
and two weightcast-recv receivers on loopback (gloo over TCP), runs three
updates with changed weights, checks every received checkpoint against the
source byte for byte with the safetensors package, and prints one line per
update.
"""

import argparse
import os
import re
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))

from weightcast_testing.cluster import Cluster  # noqa: E402
from weightcast_testing.modelgen import MoeModelSpec  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(REPO, "out", "demo"))
    ap.add_argument("--bucket-mib", type=int, default=4)
    args = ap.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    cluster = Cluster(workdir=args.out, model=MoeModelSpec(), bucket_bytes=args.bucket_mib << 20)
    total = cluster.total_bytes()
    print(f"model: qwen3_moe, {len(cluster.model.tensors())} tensors, {total / 1e6:.1f} MB bf16; "
          f"2 senders -> 2 receivers over gloo (loopback), buckets of {args.bucket_mib} MiB")
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


if __name__ == "__main__":
    sys.exit(main())
