#!/usr/bin/env python3
"""Validates weightcast's output with transformers as the oracle (needs
torch and transformers 5; run by hand, results in tests/golden/VALIDATION.md):

1. weightcast-convert turns each golden state_dict into an "hf" checkpoint;
   from_pretrained loads it and the logits on the fixed input equal the
   original model's exactly.
2. With block FP8: the checkpoint's config carries quantization_config;
   we try loading it with transformers, and compare the logits of the
   dequantized weights with bf16 (max abs difference, cosine similarity).
3. vLLM layout: the w13/w2 a receiver assembles equals the one built here
   from the transformers tensors with the rule of FORMATS.md §1.
"""

import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONVERT = os.path.join(REPO, "bazel-bin", "cmd", "weightcast-convert")


def convert(src, out, *flags):
    subprocess.run([CONVERT, "--in", src, "--out", out, "--source-layout", "fused",
                    "--model-config", os.path.join(os.path.dirname(src), "config.json"), *flags],
                   check=True, capture_output=True)
    return os.path.join(out, "step_1")


def load_dir(d):
    t = {}
    for f in os.listdir(d):
        if f.endswith(".safetensors"):
            t.update(load_file(os.path.join(d, f)))
    return t


def dequantize(tensors, config):
    out = {}
    for name, w in tensors.items():
        if name.endswith("_scale_inv"):
            continue
        scale = tensors.get(name + "_scale_inv")
        if scale is None:
            out[name] = w
            continue
        wf = w.float()
        lead = wf.shape[:-2]
        rows, cols = wf.shape[-2:]
        s = scale.float()
        if s.shape[-2] * 128 < rows or s.dim() != wf.dim():
            raise ValueError(f"{name}: scale shape {tuple(s.shape)} for {tuple(wf.shape)}")
        if s.dim() == 3 and s.shape[1] != -(-rows // 128):
            # fused gate_up: gate and up blocks apart -> per-half expansion
            half = rows // 2
            sg, su = s[:, : s.shape[1] // 2], s[:, s.shape[1] // 2:]
            e = lambda sc, n: sc.repeat_interleave(128, -2)[..., :n, :].repeat_interleave(128, -1)[..., :cols]
            full = torch.cat([e(sg, half), e(su, half)], dim=-2)
        else:
            full = s.repeat_interleave(128, -2)[..., :rows, :].repeat_interleave(128, -1)[..., :cols]
        out[name] = (wf * full).to(torch.bfloat16)
        del lead
    return out


def main() -> int:
    report = [f"torch {torch.__version__}, transformers {transformers.__version__}", ""]
    report.append("| case | hf keys+bytes vs save_pretrained | logits (hf) | fp8 loads in transformers | fp8 logits max abs diff | fp8 cosine |")
    report.append("|---|---|---|---|---|---|")
    ok = True
    for case in sorted(os.listdir(os.path.join(HERE, "models"))):
        d = os.path.join(HERE, "models", case)
        ids = torch.tensor(json.load(open(os.path.join(d, "input_ids.json"))))
        want = torch.frombuffer(bytearray(open(os.path.join(d, "logits.bin"), "rb").read()),
                                dtype=torch.float32)
        with tempfile.TemporaryDirectory() as tmp:
            hf = convert(os.path.join(d, "state_dict"), os.path.join(tmp, "hf"))
            got_t, exp_t = load_dir(hf), load_file(os.path.join(d, "expected", "model.safetensors"))
            same_bytes = set(got_t) == set(exp_t) and all(torch.equal(got_t[k], exp_t[k]) for k in exp_t)
            model = transformers.AutoModelForCausalLM.from_pretrained(hf, dtype=torch.bfloat16).eval()
            with torch.no_grad():
                logits = model(ids).logits.float().flatten()
            exact = torch.equal(logits, want)
            ok &= same_bytes and exact
            fp8 = convert(os.path.join(d, "state_dict"), os.path.join(tmp, "fp8"),
                          "--quantization", "fp8-block")
            cfg = json.load(open(os.path.join(fp8, "config.json")))
            assert cfg["quantization_config"]["weight_block_size"] == [128, 128]
            try:
                m8 = transformers.AutoModelForCausalLM.from_pretrained(fp8).eval()
                loads = "yes"
                try:
                    with torch.no_grad():
                        lt = m8(ids).logits.float().flatten()
                    loads += f", its logits' max abs diff {(lt - want).abs().max().item():.4g}"
                except Exception as e:  # noqa: BLE001 - FP8 matmul may need a GPU
                    loads += f" (forward on CPU: {type(e).__name__})"
            except Exception as e:  # noqa: BLE001
                loads = f"no ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
            # The dequantized weights as a bf16 checkpoint, loaded the way
            # transformers loads any checkpoint (per-expert keys re-fused).
            deq_dir = os.path.join(tmp, "deq")
            os.makedirs(deq_dir)
            save_file({k: v.contiguous() for k, v in dequantize(load_dir(fp8), cfg).items()},
                      os.path.join(deq_dir, "model.safetensors"), metadata={"format": "pt"})
            plain_cfg = {k: v for k, v in cfg.items() if k != "quantization_config"}
            json.dump(plain_cfg, open(os.path.join(deq_dir, "config.json"), "w"))
            deq_model = transformers.AutoModelForCausalLM.from_pretrained(
                deq_dir, dtype=torch.bfloat16).eval()
            with torch.no_grad():
                l8 = deq_model(ids).logits.float().flatten()
            missing = []
            diff = (l8 - want).abs().max().item()
            cos = torch.nn.functional.cosine_similarity(l8, want, dim=0).item()
            report.append(f"| {case} | {'equal' if same_bytes else 'DIFFERENT'} | "
                          f"{'equal' if exact else 'DIFFERENT'} | {loads} | {diff:.4g} | {cos:.6f} |"
                          + (f" (unmatched {len(missing)})" if missing else ""))
            print(report[-1], flush=True)
    # 3. vLLM layout, from the transformers tensors with the rule of FORMATS.md.
    report += ["", "| case | tp | ep | w13/w2 vs the rule on transformers' tensors |", "|---|---|---|---|"]
    for case in ("qwen3_moe", "qwen3_moe_blocks", "deepseek_v3", "glm4_moe", "mixtral", "qwen2_moe"):
        d = os.path.join(HERE, "models", case)
        if not os.path.isdir(d):
            continue
        sd = load_file(os.path.join(d, "state_dict", "model.safetensors"))
        for tp, ep in ((1, 1), (2, 1), (1, 2), (2, 3)):
            for tr in range(tp):
                for er in range(ep):
                    with tempfile.TemporaryDirectory() as tmp:
                        try:
                            out = convert(os.path.join(d, "state_dict"), tmp,
                                          "--vllm-rank", str(tr), str(tp), str(er), str(ep))
                        except subprocess.CalledProcessError as e:
                            report.append(f"| {case} | {tr}/{tp} | {er}/{ep} | refused: "
                                          f"{e.stderr.decode().strip()[:90]} |")
                            continue
                        got = load_dir(out)
                        good = True
                        for k, gu in sd.items():
                            if not k.endswith("experts.gate_up_proj"):
                                continue
                            prefix = k[: -len(".gate_up_proj")]
                            hf_prefix = prefix.replace(".mlp.experts", ".block_sparse_moe.experts") \
                                if case == "mixtral" else prefix
                            dn = sd[prefix + ".down_proj"]
                            E, I2, H = gu.shape
                            I = I2 // 2
                            itp = I // tp
                            base, rem = divmod(E, ep)
                            first, count = er * base + min(er, rem), base + (er < rem)
                            gate, up = gu.chunk(2, dim=1)
                            sl = slice(tr * itp, (tr + 1) * itp)
                            w13 = torch.cat([gate[first:first + count, sl], up[first:first + count, sl]], 1)
                            w2 = dn[first:first + count, :, sl]
                            good &= torch.equal(got[hf_prefix + ".w13_weight"], w13)
                            good &= torch.equal(got[hf_prefix + ".w2_weight"], w2)
                        ok &= good
                        report.append(f"| {case} | {tr}/{tp} | {er}/{ep} | {'equal' if good else 'DIFFERENT'} |")
    print("\n".join(report[-8:]))
    open(os.path.join(HERE, "VALIDATION.md"), "w").write(
        "# Validation against transformers\n\nMade by tests/golden/validate.py on the development "
        "machine (CPU).\n\n" + "\n".join(report) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
