"""Tiny transformers models with random weights, and a torch trainer for
them: what the vLLM tests and the demo train and serve. Shapes respect what
vLLM's CPU kernels take (head_dim 32; FP8 dimensions multiples of 128)."""

from __future__ import annotations

import torch

PROMPTS = [[1, 5, 9, 200, 17, 3, 77], [3, 4, 100], [42] * 40]


def qwen3_moe(moe_intermediate: int = 48, hidden: int = 64, experts: int = 4, layers: int = 2,
              kv_heads: int = 1, seed: int = 0):
    """A Qwen3-MoE (transformers 5: fused experts in its state_dict). Block
    FP8 on vLLM's CPU kernels wants kv_heads * 32 and moe_intermediate to be
    multiples of 128."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM  # noqa: PLC0415

    torch.manual_seed(seed)
    cfg = Qwen3MoeConfig(vocab_size=512, hidden_size=hidden, intermediate_size=2 * hidden,
                         moe_intermediate_size=moe_intermediate, num_hidden_layers=layers,
                         num_attention_heads=max(2, hidden // 32, kv_heads),
                         num_key_value_heads=kv_heads,
                         head_dim=32, num_experts=experts, num_experts_per_tok=2,
                         max_position_embeddings=512, tie_word_embeddings=False,
                         norm_topk_prob=True)
    return Qwen3MoeForCausalLM(cfg).to(torch.bfloat16)


def qwen3_dense(hidden: int = 64, intermediate: int = 160, layers: int = 2, seed: int = 0):
    from transformers import Qwen3Config, Qwen3ForCausalLM  # noqa: PLC0415

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=512, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                      head_dim=32, max_position_embeddings=512, tie_word_embeddings=False)
    return Qwen3ForCausalLM(cfg).to(torch.bfloat16)


class Trainer:
    """AdamW on random next-token batches: each step changes every weight."""

    def __init__(self, model, lr: float = 3e-3, seed: int = 1):
        self.model = model
        self.gen = torch.Generator().manual_seed(seed)
        self.opt = None
        self.lr = lr

    def step(self) -> float:
        if self.opt is None:   # made late: register() may move the parameters
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr)
        vocab = self.model.config.vocab_size
        ids = torch.randint(0, vocab, (4, 24), generator=self.gen)
        out = self.model(input_ids=ids, labels=ids)
        out.loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())


def split_names(model, parts: int) -> list[list[str]]:
    """The state_dict names in ``parts`` contiguous runs (one per sender)."""
    names = list(model.state_dict())
    step = -(-len(names) // parts)
    return [names[i:i + step] for i in range(0, len(names), step)]


def save_word_tokenizer(path: str, vocab_size: int = 512) -> None:
    """A word-level tokenizer over "w<id>" words (ids 0-3: <unk> <s> </s>
    <pad>), for servers that need one (vLLM's OpenAI server for logprobs)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {t: i for i, t in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>", pad_token="<pad>").save_pretrained(path)
