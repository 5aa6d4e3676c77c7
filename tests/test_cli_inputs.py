"""Bad input to the command-line tools: clear messages, stable exit codes."""

import os
import shutil
import subprocess

from weightcast_testing.cluster import REPO, default_bin_dir

MODELS = os.path.join(REPO, "tests", "golden", "models")


def run(name, *args, token="t"):
    env = {k: v for k, v in os.environ.items() if k != "WEIGHTCAST_TOKEN"}
    if token is not None:
        env["WEIGHTCAST_TOKEN"] = token
    return subprocess.run([os.path.join(default_bin_dir(), name), *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_bad_log_levels_and_timeouts_are_refused_at_start(tmp_path):
    p = run("weightcastd", "--listen", f"unix:{tmp_path}/d.sock", "--log-level", "bogus")
    assert p.returncode != 0 and "--log-level" in p.stderr, p.stderr
    for t in ("nan", "-1", "0"):
        p = run("weightcast-recv", "--rendezvous", "127.0.0.1:1", "--rank-offset", "1",
                "--out", str(tmp_path / "o"), "--timeout", t)
        assert p.returncode == 2 and "--timeout" in p.stderr, (t, p.stderr)


def test_a_token_file_others_can_read_is_refused(tmp_path):
    tok = tmp_path / "token"
    tok.write_text("s3cret\n")
    tok.chmod(0o644)
    recv = ("weightcast-recv", "--rendezvous", "127.0.0.1:1", "--rank-offset", "1",
            "--out", str(tmp_path / "o"))
    p = run(*recv, "--token-file", str(tok))
    assert p.returncode == 2 and "readable by every user" in p.stderr, p.stderr
    # The token never travels on a command line, where every local user
    # sees it in ps; without one a receiver is refused.
    p = run(*recv, "--token", "x")
    assert p.returncode != 0 and "--token" in p.stdout + p.stderr, p.stderr
    p = run(*recv, token=None)
    assert p.returncode == 2 and "group token is required" in p.stderr, p.stderr
    p = run("weightcastctl", "--addr", f"unix:{tmp_path}/none.sock", "init", "--token-file",
            str(tok))
    assert p.returncode == 2 and "readable by every user" in p.stderr, p.stderr


def test_convert_reports_bad_input_and_converts_good(tmp_path):
    p = run("weightcast-convert", "--in", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert p.returncode == 1 and "missing" in p.stderr
    src = os.path.join(MODELS, "qwen3_moe", "state_dict")
    cfg = os.path.join(MODELS, "qwen3_moe", "config.json")
    p = run("weightcast-convert", "--in", src, "--out", str(tmp_path / "o"), "--family", "dbrx")
    assert p.returncode == 2 and "'dbrx' is not supported" in p.stderr
    p = run("weightcast-convert", "--in", src, "--out", str(tmp_path / "o"), "--model-config", cfg)
    assert p.returncode == 2 and "is in the fused layout" in p.stderr  # default per-expert
    p = run("weightcast-convert", "--in", src, "--out", str(tmp_path / "o"), "--model-config", cfg,
            "--source-layout", "fused", "--vllm-rank", "0", "3", "0", "1")
    assert p.returncode == 2 and "not divisible by tp 3" in p.stderr
    p = run("weightcast-convert", "--in", src, "--out", str(tmp_path / "o"), "--model-config", cfg,
            "--source-layout", "fused")
    assert p.returncode == 0 and os.path.isdir(tmp_path / "o" / "step_1")
    # A truncated shard is refused, naming the file.
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    shard = bad / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    p = run("weightcast-convert", "--in", str(bad), "--out", str(tmp_path / "o2"))
    assert p.returncode == 2 and "model.safetensors" in p.stderr and "truncated" in p.stderr


def test_recv_refuses_bad_flags(tmp_path):
    p = run("weightcast-recv", "--rendezvous", "127.0.0.1:1", "--rank-offset", "1", "--out",
            str(tmp_path), "--layout", "sideways")
    assert p.returncode == 2 and "--layout" in p.stderr
    p = run("weightcast-recv", "--rendezvous", "127.0.0.1:1", "--rank-offset", "0", "--out",
            str(tmp_path))
    assert p.returncode == 2
    p = run("weightcast-recv", "--rendezvous", "127.0.0.1:1", "--rank-offset", "1", "--out",
            str(tmp_path), "--cuda-device", "-1")
    assert p.returncode == 2 and "--cuda-device" in p.stderr
    p = run("weightcast-recv", "--out", str(tmp_path))
    assert p.returncode != 0 and "rendezvous" in (p.stdout + p.stderr)
