#!/usr/bin/env python3
"""Builds tiny random-weight models with transformers itself, one per
supported family, and saves what weightcast's golden tests compare against:

  tests/golden/models/<case>/config.json
  tests/golden/models/<case>/state_dict/model.safetensors   model.state_dict()
                                                  (transformers 5's in-memory layout)
  tests/golden/models/<case>/expected/model.safetensors     what save_pretrained wrote
  tests/golden/models/<case>/input_ids.json, logits.bin     a fixed input and its logits

The oracle is transformers: weightcast must turn state_dict into exactly the
expected tensors (formats/golden_test.cc, no torch needed), and a checkpoint
it writes must give exactly these logits (tests/golden/validate.py, needs
torch). Run on a machine with torch and transformers 5:
    python3 tests/golden/make_golden.py
"""

import json
import os
import shutil
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "models")

# Sizes are not multiples of 128; "qwen3_moe_blocks" spans several 128-blocks.
COMMON = dict(vocab_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              max_position_embeddings=64, tie_word_embeddings=False)
_QWEN_MOE = dict(hidden_size=72, intermediate_size=136, moe_intermediate_size=40, num_experts=6,
                 num_experts_per_tok=2, num_hidden_layers=2)
_LINEAR_ATTN = dict(layer_types=["linear_attention", "full_attention"], linear_num_value_heads=4,
                    linear_num_key_heads=2, linear_key_head_dim=16, linear_value_head_dim=16)
_DEEPSEEK = dict(hidden_size=72, intermediate_size=136, moe_intermediate_size=40,
                 n_routed_experts=6, n_shared_experts=1, num_experts_per_tok=2, n_group=2,
                 topk_group=1, first_k_dense_replace=1, num_hidden_layers=2, q_lora_rank=40,
                 kv_lora_rank=24, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                 head_dim=8, num_key_value_heads=4)
CASES = {
    "qwen3_moe": ("Qwen3MoeConfig", dict(hidden_size=72, intermediate_size=136,
                                          moe_intermediate_size=40, num_experts=6,
                                          num_experts_per_tok=2, num_hidden_layers=2)),
    "qwen3_moe_blocks": ("Qwen3MoeConfig", dict(hidden_size=264, intermediate_size=300,
                                                 moe_intermediate_size=136, num_experts=3,
                                                 num_experts_per_tok=2, num_hidden_layers=1)),
    "qwen2_moe": ("Qwen2MoeConfig", dict(hidden_size=72, intermediate_size=136,
                                          moe_intermediate_size=40, shared_expert_intermediate_size=56,
                                          num_experts=6, num_experts_per_tok=2, num_hidden_layers=2)),
    "deepseek_v3": ("DeepseekV3Config", dict(hidden_size=72, intermediate_size=136,
                                              moe_intermediate_size=40, n_routed_experts=6,
                                              n_shared_experts=1, num_experts_per_tok=2,
                                              n_group=2, topk_group=1, first_k_dense_replace=1,
                                              num_hidden_layers=2, q_lora_rank=40, kv_lora_rank=24,
                                              qk_nope_head_dim=8, qk_rope_head_dim=8,
                                              v_head_dim=8, head_dim=8,
                                              num_key_value_heads=4)),
    "glm4_moe": ("Glm4MoeConfig", dict(hidden_size=72, intermediate_size=136,
                                        moe_intermediate_size=40, n_routed_experts=6,
                                        n_shared_experts=1, num_experts_per_tok=2, n_group=1,
                                        topk_group=1, first_k_dense_replace=1,
                                        num_hidden_layers=2)),
    "mixtral": ("MixtralConfig", dict(hidden_size=72, intermediate_size=40, num_local_experts=6,
                                       num_experts_per_tok=2, num_hidden_layers=2)),
    "llama4_text": ("Llama4TextConfig", dict(hidden_size=72, intermediate_size=40,
                                              intermediate_size_mlp=136, num_local_experts=6,
                                              num_experts_per_tok=1, num_hidden_layers=2,
                                              interleave_moe_layer_step=1)),
    "llama": ("LlamaConfig", dict(hidden_size=72, intermediate_size=136, num_hidden_layers=2)),
    # Families that share qwen3_moe's rules (experts under "mlp", fused
    # gate_up_proj [E, 2I, H]); hybrid-attention ones get one layer of each.
    "qwen3_next": ("Qwen3NextConfig", dict(_QWEN_MOE, shared_expert_intermediate_size=56,
                                            **_LINEAR_ATTN)),
    "qwen3_5_moe_text": ("Qwen3_5MoeTextConfig", dict(_QWEN_MOE,
                                                       shared_expert_intermediate_size=56,
                                                       **_LINEAR_ATTN)),
    "deepseek_v32": ("DeepseekV32Config", dict(_DEEPSEEK, index_n_heads=2, index_head_dim=16)),
    "glm4_moe_lite": ("Glm4MoeLiteConfig", dict(_DEEPSEEK, n_group=1)),
    "olmoe": ("OlmoeConfig", dict(hidden_size=72, intermediate_size=40, num_experts=6,
                                   num_experts_per_tok=2, num_hidden_layers=2, head_dim=18)),
    # The router's bias is renamed between memory and checkpoint.
    "ernie4_5_moe": ("Ernie4_5_MoeConfig", dict(hidden_size=72, intermediate_size=136,
                                                 moe_intermediate_size=40, moe_num_experts=6,
                                                 moe_k=2, num_hidden_layers=2,
                                                 moe_layer_start_index=0,
                                                 moe_num_shared_experts=1)),
    # Mixtral's rules, with e_score_correction_bias moving with the block.
    "minimax_m2": ("MiniMaxM2Config", dict(hidden_size=72, intermediate_size=40,
                                            num_local_experts=6, num_experts_per_tok=2,
                                            num_hidden_layers=2)),
    # Fused on disk too, under other names (input_linear, output_linear).
    "granitemoe": ("GraniteMoeConfig", dict(hidden_size=72, intermediate_size=40,
                                             num_local_experts=6, num_experts_per_tok=2,
                                             num_hidden_layers=2)),
    # Fused and transposed on disk, gate and up interleaved by column, biases.
    "gpt_oss": ("GptOssConfig", dict(hidden_size=72, intermediate_size=40, num_local_experts=6,
                                      num_experts_per_tok=2, num_hidden_layers=2,
                                      layer_types=["sliding_attention", "full_attention"])),
    # transformers has no kimi_k2: it is DeepSeek-V3's architecture under
    # another model_type (its config.json says "kimi_k2").
    "kimi_k2": ("DeepseekV3Config", dict(_DEEPSEEK, n_group=1)),
}
# config.json's model_type where it differs from what the config class writes.
MODEL_TYPE = {"kimi_k2": "kimi_k2"}
INPUT_IDS = [[3, 17, 42, 5, 77, 1, 90, 23, 8, 64]]


def build(case: str):
    cls_name, kw = CASES[case]
    cfg_cls = getattr(transformers, cls_name)
    args = dict(COMMON)
    args.update(kw)
    cfg = cfg_cls(**{k: v for k, v in args.items()})
    torch.manual_seed(1234)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()
    # Random weights everywhere (norms too), so nothing is trivially equal.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p, dtype=torch.float32).mul_(0.05).to(p.dtype))
    return model


def main() -> int:
    only = sys.argv[1:] or list(CASES)
    shutil.rmtree(OUT, ignore_errors=True) if not sys.argv[1:] else None
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for case in only:
        try:
            model = build(case)
            with torch.no_grad():
                model(torch.tensor(INPUT_IDS))
        except Exception as e:  # noqa: BLE001 - a family this transformers cannot build
            print(f"{case}: skipped ({type(e).__name__}: {e})")
            continue
        d = os.path.join(OUT, case)
        os.makedirs(os.path.join(d, "state_dict"), exist_ok=True)
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(sd, os.path.join(d, "state_dict", "model.safetensors"), metadata={"format": "pt"})
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            shards = [f for f in os.listdir(tmp) if f.endswith(".safetensors")]
            expected = {}
            for s in shards:
                expected.update(load_file(os.path.join(tmp, s)))
            os.makedirs(os.path.join(d, "expected"), exist_ok=True)
            save_file(expected, os.path.join(d, "expected", "model.safetensors"))
            config = json.load(open(os.path.join(tmp, "config.json")))
            if case in MODEL_TYPE:
                config["model_type"] = MODEL_TYPE[case]
            json.dump(config, open(os.path.join(d, "config.json"), "w"), indent=2)
        with torch.no_grad():
            logits = model(torch.tensor(INPUT_IDS)).logits.float()
        json.dump(INPUT_IDS, open(os.path.join(d, "input_ids.json"), "w"))
        logits.numpy().tofile(os.path.join(d, "logits.bin"))
        json.dump({"case": case, "config_class": CASES[case][0], **versions,
                   "state_dict_keys": len(sd), "saved_keys": len(expected)},
                  open(os.path.join(d, "made_with.json"), "w"), indent=1)
        print(f"{case}: {len(sd)} state_dict tensors -> {len(expected)} saved tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
