"""A process owning one real vLLM engine, driven over stdin/stdout (one JSON
object per line): what the vLLM tests, the demo and the benchmark talk to.

    python -m weightcast_testing.vllm_host --model DIR [--multiprocess] [--tp 2]
        [--backend weightcast | --extension] [--dtype bfloat16]

Requests and replies ({"ok": true, ...} or {"ok": false, "error", "type"}):
    {"op": "init", "init_info": {...}}                 weightcast joins the group
    {"op": "update", "version": v, "wait_s": s}        VllmUpdater.update (or the extension)
    {"op": "native", "version": v}                     vLLM's own calls, no helper
    {"op": "reset_prefix_cache"}
    {"op": "generate", "max_tokens": n}                greedy tokens and top-5 logprobs
    {"op": "reload", "model": DIR}                     reload_weights from a checkpoint
    {"op": "load", "model": DIR}                       a fresh engine on DIR
    {"op": "weight_version"} / {"op": "state"} / {"op": "quit"}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

# Before vLLM is imported.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def error_fields(e: BaseException) -> dict:
    """The reply to a request that raised (both hosts)."""
    from weightcast.errors import ReceiveError  # noqa: PLC0415

    traceback.print_exc()
    return dict(ok=False, error=str(e), type=type(e).__name__,
                dirty=bool(getattr(e, "dirty", False)), weightcast=isinstance(e, ReceiveError))


def engine_kwargs(args) -> dict:
    kw = dict(dtype=args.dtype, enforce_eager=True, max_model_len=256, skip_tokenizer_init=True,
              block_size=32, tensor_parallel_size=args.tp, seed=0)
    if args.extension:
        kw["worker_extension_cls"] = "weightcast.vllm.WorkerExtension"
    elif args.backend:
        kw["weight_transfer_config"] = {"backend": args.backend}
    return kw


def generate(llm, max_tokens: int) -> list:
    from vllm import SamplingParams  # noqa: PLC0415

    from weightcast_testing.tiny_models import PROMPTS  # noqa: PLC0415

    sp = SamplingParams(temperature=0, max_tokens=max_tokens, logprobs=5)
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], sp, use_tqdm=False)
    result = []
    for o in outs:
        c = o.outputs[0]
        result.append({"tokens": list(c.token_ids),
                       "logprobs": [{str(k): v.logprob for k, v in sorted(lp.items())}
                                    for lp in c.logprobs]})
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--backend", default="weightcast")
    ap.add_argument("--extension", action="store_true")
    ap.add_argument("--multiprocess", action="store_true")
    args = ap.parse_args()
    # Replies go to the original stdout; everything else (vLLM's prints, its
    # engine and worker processes, which inherit fd 1) to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if args.multiprocess or args.tp > 1 else "0"
    # The "state" op ships a function to the workers (VllmUpdater.state).
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    if args.tp > 1:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND",
                              "|".join(str(i % os.cpu_count()) for i in range(args.tp)))
    from vllm import LLM  # noqa: PLC0415

    from weightcast.vllm import VllmUpdater  # noqa: PLC0415

    def reply(**kw):
        out.write(json.dumps(kw) + "\n")
        out.flush()

    t0 = time.monotonic()
    try:
        llm = LLM(model=args.model, **engine_kwargs(args))
        updater = VllmUpdater(llm)
    except Exception as e:  # noqa: BLE001 - reported to the driver
        # An engine that failed to start can leave vLLM's threads behind,
        # which would keep this process (and the driver's read) waiting.
        reply(**error_fields(e))
        os._exit(1)
    reply(ok=True, started_s=time.monotonic() - t0)
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            t = time.monotonic()
            if op == "init":
                if args.extension:
                    ranks = llm.collective_rpc("weightcast_init", args=(req["init_info"],))
                    reply(ok=True, ranks=ranks)
                else:
                    updater.init(**req["init_info"])
                    reply(ok=True)
            elif op == "update":
                if args.extension:
                    v = llm.collective_rpc("weightcast_update", args=(
                        {"version": req["version"], "wait_s": req.get("wait_s", 60)},))
                    llm.reset_prefix_cache()
                    llm.update_weight_version(str(v[0]))
                else:
                    updater.update(req["version"], wait_s=req.get("wait_s", 60))
                reply(ok=True, seconds=time.monotonic() - t)
            elif op == "native":
                llm.start_weight_update()
                llm.update_weights({"update_info": {"version": req["version"],
                                                    "wait_s": req.get("wait_s", 60)}})
                llm.finish_weight_update(weight_version=str(req["version"]))
                if req.get("reset_prefix_cache", True):
                    llm.reset_prefix_cache()
                reply(ok=True, seconds=time.monotonic() - t)
            elif op == "reset_prefix_cache":
                reply(ok=True, reset=llm.reset_prefix_cache())
            elif op == "generate":
                reply(ok=True, outputs=generate(llm, req.get("max_tokens", 8)))
            elif op == "reload":
                llm.collective_rpc("reload_weights", kwargs={"weights_path": req["model"]})
                llm.reset_prefix_cache()
                reply(ok=True, seconds=time.monotonic() - t)
            elif op == "load":
                # Every reference to the old engine first: its teardown
                # takes vLLM's process groups with it.
                del llm, updater
                import gc  # noqa: PLC0415

                gc.collect()
                llm = LLM(model=req["model"], **engine_kwargs(args))
                updater = VllmUpdater(llm)
                reply(ok=True, seconds=time.monotonic() - t)
            elif op == "weight_version":
                reply(ok=True, version=llm.get_weight_version())
            elif op == "state":
                reply(ok=True, state=updater.state())
            elif op == "quit":
                reply(ok=True)
                break
            else:
                reply(ok=False, error=f"unknown op {op!r}", type="ValueError")
        except Exception as e:  # noqa: BLE001 - reported to the driver
            reply(**error_fields(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
