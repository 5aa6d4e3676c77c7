"""Tests of bench/torch_baseline.py on the CPU (gloo): the script end to end
with 1 sender + 2 receivers in both modes, and its transforms against
independent references (ml_dtypes' e4m3 golden cases, a numpy block
quantizer, transformers' save_pretrained output, and weightcast-convert when
it is built). Skipped where torch is not installed (CI has no torch).

    python3 -m pytest -q bench/torch_baseline_test.py
"""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
np = pytest.importorskip("numpy")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "torch_baseline.py")
GOLDEN = os.path.join(REPO, "tests", "golden")
sys.path.insert(0, HERE)

import torch_baseline as tb  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tiny"))
    tb.generate_model(d, "tiny")
    return d


def entries_of(state, bucket_bytes, expand, fp8):
    """{name: (dtype, shape, bytes)} of everything iter_buckets sends, and the
    bucket sizes."""
    got, sizes = {}, []
    for bucket, entries in tb.iter_buckets(state, bucket_bytes, expand, fp8):
        sizes.append(bucket.numel())
        for name, dtype, shape, off in entries:
            nbytes = torch.empty(shape, dtype=getattr(torch, dtype), device="meta").nbytes
            got[name] = (dtype, shape, bucket[off:off + nbytes].numpy().tobytes())
    return got, sizes


def raw_bytes(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


# ---- the script, end to end ------------------------------------------------

def run_script(model_dir, tmp_path, *flags):
    out = tmp_path / f"result{len(list(tmp_path.iterdir()))}.json"
    p = subprocess.run([sys.executable, SCRIPT, "--model-dir", model_dir, "--receivers", "2",
                        "--backend", "gloo", "--reps", "2", "--verify", "--json", str(out),
                        *flags], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stdout
    result = json.loads(lines[0])
    assert json.loads(out.read_text()) == result
    return result


@pytest.mark.parametrize("flags", [[], ["--fp8", "--expand"]], ids=["plain", "fp8-expand"])
def test_baseline_and_raw_move_the_same_bytes_and_verify(tiny_model, tmp_path, flags):
    bucket_bytes = 64 << 10
    flags = [*flags, "--bucket-bytes", str(bucket_bytes)]
    base = run_script(tiny_model, tmp_path, "--mode", "baseline", *flags)
    raw = run_script(tiny_model, tmp_path, "--mode", "raw", *flags)

    fp8 = "--fp8" in flags
    state = tb.load_state(tiny_model, CPU, fused="--expand" in flags)
    sent, sizes = entries_of(state, bucket_bytes, "--expand" in flags, fp8)
    for r, mode in ((base, "baseline"), (raw, "raw")):
        assert set(r) >= {"mode", "backend", "ranks", "wire_bytes", "buckets", "seconds_median",
                          "seconds_all", "gbps"}
        assert r["mode"] == mode and r["backend"] == "gloo" and r["ranks"] == 3
        assert r["wire_bytes"] == sum(sizes) > 0
        assert r["buckets"] == len(sizes) > 1
        assert len(r["seconds_all"]) == 2 and r["seconds_median"] > 0 and r["gbps"] > 0
        assert r["verified"] is True
    assert base["wire_bytes"] == raw["wire_bytes"] and base["buckets"] == raw["buckets"]
    assert max(sizes[:-1]) <= bucket_bytes  # no oversized tensor in the tiny model
    if fp8:
        assert len(base["fp8_checked"]) == 3
        assert any(n.endswith("_scale_inv") for n in sent)
    else:
        # Nothing transformed: the wire carries exactly the checkpoint.
        assert base["wire_bytes"] == sum(t.nbytes for _, t in state)
        assert base["fp8_checked"] == []


def test_verify_catches_a_corrupted_byte(tiny_model, tmp_path):
    p = subprocess.run([sys.executable, SCRIPT, "--model-dir", tiny_model, "--receivers", "2",
                        "--backend", "gloo", "--reps", "1", "--verify", "--corrupt-for-test",
                        "--bucket-bytes", str(64 << 10), "--timeout", "60"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and p.stdout.strip() == ""
    assert "rank 2: buckets [" in p.stderr and "differ from what rank 0 sent" in p.stderr


def test_a_failing_rank_reports_no_number(tiny_model, tmp_path):
    """The script does not report a number when a rank fails."""
    p = subprocess.run([sys.executable, SCRIPT, "--model-dir", str(tmp_path / "missing"),
                        "--receivers", "1", "--backend", "gloo", "--reps", "1", "--timeout", "30"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and p.stdout.strip() == ""
    assert "no *.safetensors" in p.stderr


# ---- the transforms against references -------------------------------------

def test_e4m3_cast_matches_golden_cases():
    """Clamp + torch's float8_e4m3fn cast equals ml_dtypes on the golden cases
    weightcast's own encoder is checked against (ties, subnormals, NaN, inf)."""
    rec = np.fromfile(os.path.join(GOLDEN, "fp8", "e4m3_cases.bin"), dtype=[("v", "<f4"), ("c", "u1")])
    x = torch.from_numpy(rec["v"].copy())
    codes = x.clamp(-tb.E4M3_MAX, tb.E4M3_MAX).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    assert len(rec) > 16000
    assert np.array_equal(codes, rec["c"])


def test_block_quantizer_matches_numpy_reference():
    pytest.importorskip("ml_dtypes")
    g = torch.Generator().manual_seed(7)
    w = torch.randn(300, 260, generator=g) * 0.02
    w[:128, 128:256] *= 1000  # one block far from the others
    w[128:256, :128] = 0  # an all-zero block: amax floor
    w[256:, 256:] = 1e-7  # tiny values in a partial block
    w = w.to(torch.bfloat16)
    q, scale = tb.quantize_block_fp8(w)
    assert q.dtype == torch.float8_e4m3fn and q.shape == w.shape
    assert scale.dtype == torch.float32 and scale.shape == (3, 3)
    codes, ref_scale = tb.reference_block_fp8(w.float().numpy())
    assert raw_bytes(q) == codes.tobytes()
    assert raw_bytes(scale) == ref_scale.tobytes()
    # 3-D input: per leading index.
    q3, s3 = tb.quantize_block_fp8(torch.stack([w, -w]))
    assert raw_bytes(q3[0]) == raw_bytes(q) and raw_bytes(s3[1]) == raw_bytes(scale)
    # Dequantization within FORMATS.md's bound.
    full = scale.repeat_interleave(128, 0)[:300].repeat_interleave(128, 1)[:, :260]
    d = q.float() * full
    wf = w.float()
    assert torch.all((d - wf).abs() <= torch.maximum(2.0**-4 * wf.abs(), 2.0**-10 * full))


def test_skip_rules():
    m = torch.zeros(4, 4)
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                 "model.layers.0.input_layernorm.weight", "model.layers.0.mlp.gate.weight",
                 "model.layers.0.mlp.shared_expert_gate.weight",
                 "model.layers.0.block_sparse_moe.gate.weight",
                 "model.layers.0.feed_forward.router.weight", "model.layers.0.mlp.experts.gate_up_proj"):
        assert not tb.quantizable(name, m), name
    assert not tb.quantizable("model.layers.0.self_attn.q_proj.weight", torch.zeros(4))
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.gate_proj.weight",
                 "model.layers.0.mlp.experts.3.down_proj.weight",
                 "model.layers.0.mlp.shared_experts.up_proj.weight"):
        assert tb.quantizable(name, m), name
    # shared_experts is never taken for routed experts.
    t = torch.zeros(2, 4, 3)
    assert tb.expand_experts("model.layers.0.mlp.shared_experts.gate_up_proj", t) == [
        ("model.layers.0.mlp.shared_experts.gate_up_proj", t)]


@pytest.mark.parametrize("case", ["qwen3_moe", "qwen3_moe_blocks"])
def test_expand_equals_transformers_save_pretrained(case):
    """transformers 5's fused state_dict, expanded, gives exactly what its
    save_pretrained wrote (per-expert keys), names and bytes."""
    from safetensors.torch import load_file

    model = os.path.join(GOLDEN, "models", case)
    state = tb.load_state(os.path.join(model, "state_dict"), CPU, fused=True)
    assert any(tb.FUSED_EXPERTS.match(n) for n, _ in state)
    got, _ = entries_of(state, 1 << 40, expand=True, fp8=False)
    want = load_file(os.path.join(model, "expected", "model.safetensors"))
    assert set(got) == set(want)
    for name, t in want.items():
        assert got[name][1] == list(t.shape) and got[name][2] == raw_bytes(t), name


def test_fuse_then_expand_is_the_identity(tiny_model):
    per_expert = tb.load_state(tiny_model, CPU, fused=False)
    fused = tb.load_state(tiny_model, CPU, fused=True)
    assert len(fused) < len(per_expert)
    got, _ = entries_of(fused, 1 << 40, expand=True, fp8=False)
    assert {n: raw_bytes(t) for n, t in per_expert} == {n: v[2] for n, v in got.items()}


def weightcast_convert():
    path = os.path.join(os.environ.get("WEIGHTCAST_BIN", os.path.join(REPO, "bazel-bin", "cmd")),
                        "weightcast-convert")
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built (bazel build //cmd:weightcast-convert)")
    return path


@pytest.mark.parametrize("source", ["tiny", "qwen3_moe", "qwen3_moe_blocks"])
def test_fp8_equals_weightcast_convert(tiny_model, tmp_path, source):
    """Bit for bit the same tensors (names, dtypes, shapes, fp8 codes and
    scales) as weightcast's CPU pipeline, from a per-expert checkpoint (no
    expansion) and from transformers' fused state_dict (--expand)."""
    from safetensors.torch import load_file

    exe = weightcast_convert()
    if source == "tiny":
        src, expand, extra = tiny_model, False, []
    else:
        model = os.path.join(GOLDEN, "models", source)
        src, expand = os.path.join(model, "state_dict"), True
        extra = ["--model-config", os.path.join(model, "config.json"), "--source-layout", "fused"]
    out = tmp_path / "wc"
    subprocess.run([exe, "--in", src, "--out", str(out), "--target", "hf",
                    "--quantization", "fp8-block", *extra], check=True, capture_output=True)
    want = load_file(str(out / "step_1" / "model.safetensors"))
    got, _ = entries_of(tb.load_state(src, CPU, fused=expand), 1 << 40, expand, fp8=True)
    assert set(got) == set(want)
    assert sum(n.endswith("_scale_inv") for n in want) > 0
    for name, t in want.items():
        dtype, shape, data = got[name]
        assert (dtype, shape) == (str(t.dtype).removeprefix("torch."), list(t.shape)), name
        assert data == raw_bytes(t), name
