"""Generates small Qwen3-MoE style models (names, shapes and config.json of
transformers' qwen3_moe), with sizes that are not powers of two.

The values of every tensor are a pure function of (tensor name, version), so
a checker can recompute what a receiver must hold for any version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from weightcast.shm import bf16_from_float32


@dataclass(frozen=True)
class MoeModelSpec:
    hidden: int = 360
    heads: int = 10
    kv_heads: int = 2
    head_dim: int = 36
    moe_intermediate: int = 200
    dense_intermediate: int = 520
    experts: int = 12
    experts_per_tok: int = 4
    layers: int = 4
    vocab: int = 4000

    @classmethod
    def tiny(cls) -> "MoeModelSpec":
        return cls(hidden=72, heads=6, kv_heads=2, head_dim=12, moe_intermediate=40,
                   dense_intermediate=136, experts=6, experts_per_tok=2, layers=3, vocab=250)

    def config(self) -> dict:
        return {
            "architectures": ["Qwen3MoeForCausalLM"],
            "model_type": "qwen3_moe",
            "hidden_size": self.hidden,
            "intermediate_size": self.dense_intermediate,
            "moe_intermediate_size": self.moe_intermediate,
            "num_experts": self.experts,
            "num_experts_per_tok": self.experts_per_tok,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "norm_topk_prob": True,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
        }

    def layer_tensors(self, layer: int) -> list[tuple[str, str, tuple]]:
        h, hd = self.hidden, self.head_dim
        p = f"model.layers.{layer}."
        out = [
            (p + "input_layernorm.weight", "BF16", (h,)),
            (p + "self_attn.q_proj.weight", "BF16", (self.heads * hd, h)),
            (p + "self_attn.k_proj.weight", "BF16", (self.kv_heads * hd, h)),
            (p + "self_attn.v_proj.weight", "BF16", (self.kv_heads * hd, h)),
            (p + "self_attn.o_proj.weight", "BF16", (h, self.heads * hd)),
            (p + "self_attn.q_norm.weight", "BF16", (hd,)),
            (p + "self_attn.k_norm.weight", "BF16", (hd,)),
            (p + "post_attention_layernorm.weight", "BF16", (h,)),
            (p + "mlp.gate.weight", "BF16", (self.experts, h)),
        ]
        i = self.moe_intermediate
        for e in range(self.experts):
            q = f"{p}mlp.experts.{e}."
            out += [
                (q + "gate_proj.weight", "BF16", (i, h)),
                (q + "up_proj.weight", "BF16", (i, h)),
                (q + "down_proj.weight", "BF16", (h, i)),
            ]
        return out

    def tensors(self) -> list[tuple[str, str, tuple]]:
        out = [("model.embed_tokens.weight", "BF16", (self.vocab, self.hidden))]
        for layer in range(self.layers):
            out += self.layer_tensors(layer)
        out += [("model.norm.weight", "BF16", (self.hidden,)),
                ("lm_head.weight", "BF16", (self.vocab, self.hidden))]
        return out

    def split(self, num_senders: int) -> list[list[tuple[str, str, tuple]]]:
        """Ownership: sender k gets a contiguous run of layers; sender 0 also
        the embeddings, the last sender the final norm and lm_head."""
        parts: list[list] = [[] for _ in range(num_senders)]
        parts[0].append(("model.embed_tokens.weight", "BF16", (self.vocab, self.hidden)))
        for layer in range(self.layers):
            parts[layer * num_senders // self.layers].extend(self.layer_tensors(layer))
        parts[-1] += [("model.norm.weight", "BF16", (self.hidden,)),
                      ("lm_head.weight", "BF16", (self.vocab, self.hidden))]
        return parts


def values(name: str, dtype: str, shape: tuple, version: int) -> np.ndarray:
    """The raw values of `name` at `version` (BF16 as uint16 bits)."""
    seed = int.from_bytes(hashlib.sha256(f"{name}@{version}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(size=shape, dtype=np.float32) * np.float32(0.02)
    if name.endswith("norm.weight"):
        x = x + np.float32(1.0)
    if dtype == "BF16":
        return bf16_from_float32(x)
    if dtype == "F32":
        return x
    raise ValueError(f"{name}: generator does not make {dtype}")
