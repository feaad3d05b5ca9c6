"""Test doubles: a scripted Engine (prompting, caching, extraction, scoring) and a Llama with fixed logits."""

from __future__ import annotations

from collections.abc import Sequence

from polyrise.config import SamplingSettings
from polyrise.generation import ChatRequest


class ScriptedEngine:
    """Answers each request with the reply of the first key that occurs in its last user turn ("" otherwise)."""

    fingerprint = "scripted"
    batch_size = 2

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies
        self.seen: list[ChatRequest] = []
        self.calls: list[SamplingSettings] = []

    def render(self, request: ChatRequest) -> str:
        return "\n".join(f"<{m['role']}>{m['content']}" for m in request.messages) + "|" + request.prefix

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        self.seen.extend(requests)
        self.calls.append(params)
        return [next((v for k, v in self.replies.items() if k in r.messages[-1]["content"]), "") for r in requests]


def biased_llama(tokenizer, bias: dict[int, float], default: float = 0.0):
    """A 1-layer Llama whose logits ignore the input: an all-zero lm_head whose bias is `bias` (`default` elsewhere)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    head = torch.nn.Linear(16, len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(default)
        for token, value in bias.items():
            head.bias[token] = value
    model.lm_head = head
    return model
