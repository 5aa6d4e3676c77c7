"""Like weightcast_testing.vllm_host, with a vLLM AsyncLLM engine: updates
while requests are in flight, under the policy the orchestrator picks.

    python -m weightcast_testing.vllm_async_host --model DIR

Requests (one JSON object per line; replies as vllm_host's):
    {"op": "init", "init_info": {...}}
    {"op": "update_during", "version": v, "in_flight": "keep"|"abort"|"wait",
     "max_tokens": n}    starts the test prompts, waits until each has two
                         tokens, then VllmUpdater.update_async; replies with
                         each request's tokens and finish reason
    {"op": "generate", "max_tokens": n} / {"op": "weight_version"} / {"op": "quit"}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


async def main_async(args, out) -> int:
    from vllm import SamplingParams  # noqa: PLC0415
    from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: PLC0415
    from vllm.v1.engine.async_llm import AsyncLLM  # noqa: PLC0415

    from weightcast.vllm import VllmUpdater  # noqa: PLC0415
    from weightcast_testing.tiny_models import PROMPTS  # noqa: PLC0415
    from weightcast_testing.vllm_host import error_fields  # noqa: PLC0415

    def reply(**kw):
        out.write(json.dumps(kw) + "\n")
        out.flush()

    t0 = time.monotonic()
    try:
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(
            model=args.model, dtype="bfloat16", enforce_eager=True, max_model_len=256,
            skip_tokenizer_init=True, block_size=32, seed=0,
            weight_transfer_config={"backend": "weightcast"}))
        updater = VllmUpdater(engine)
    except Exception as e:  # noqa: BLE001 - reported to the driver
        reply(**error_fields(e))  # then out, whatever vLLM left running
        os._exit(1)
    counter = [0]

    async def run(prompt, max_tokens, progress=None):
        counter[0] += 1
        sp = SamplingParams(temperature=0, max_tokens=max_tokens, logprobs=5)
        final = None
        async for o in engine.generate({"prompt_token_ids": prompt}, sp, f"r{counter[0]}"):
            final = o
            if progress is not None:
                progress(len(o.outputs[0].token_ids))
        c = final.outputs[0]
        return {"tokens": list(c.token_ids), "finish_reason": c.finish_reason,
                "logprobs": [{str(k): v.logprob for k, v in sorted(lp.items())}
                             for lp in (c.logprobs or [])]}

    reply(ok=True, started_s=time.monotonic() - t0)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "init":
                await updater.init_async(**req["init_info"])
                reply(ok=True)
            elif op == "generate":
                outs = await asyncio.gather(*(run(p, req.get("max_tokens", 8)) for p in PROMPTS))
                reply(ok=True, outputs=[{"tokens": o["tokens"], "logprobs": o["logprobs"]}
                                        for o in outs])
            elif op == "update_during":
                started = asyncio.Event()
                counts = [0] * len(PROMPTS)

                def progress(i):
                    def on(n):
                        counts[i] = n
                        if all(c >= 2 for c in counts):
                            started.set()
                    return on

                tasks = [asyncio.create_task(run(p, req["max_tokens"], progress(i)))
                         for i, p in enumerate(PROMPTS)]
                await asyncio.wait_for(started.wait(), 60)
                at_update = list(counts)
                t = time.monotonic()
                await updater.update_async(req["version"], wait_s=req.get("wait_s", 60),
                                           in_flight=req["in_flight"])
                seconds = time.monotonic() - t
                outs = await asyncio.gather(*tasks)
                reply(ok=True, requests=outs, tokens_at_update=at_update, seconds=seconds,
                      weight_version=await engine.get_weight_version())
            elif op == "weight_version":
                reply(ok=True, version=await engine.get_weight_version())
            elif op == "quit":
                reply(ok=True)
                break
            else:
                reply(ok=False, error=f"unknown op {op!r}", type="ValueError")
        except Exception as e:  # noqa: BLE001 - reported to the driver
            reply(**error_fields(e))
    engine.shutdown()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return asyncio.run(main_async(args, out))


if __name__ == "__main__":
    sys.exit(main())
