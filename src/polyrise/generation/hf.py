"""transformers engine: chat templates, length-sorted left-padded batches, greedy or sampled decoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from polyrise.config import ModelSettings, SamplingSettings
from polyrise.generation import ChatRequest
from polyrise.models import ResolvedModel, load_model, load_tokenizer


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` at the earliest stop string (the stop string itself is dropped)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


class HFEngine:
    """Generate with a transformers causal LM. Pass `model`/`tokenizer` to reuse loaded objects."""

    def __init__(
        self,
        resolved: ResolvedModel,
        settings: ModelSettings | None = None,
        *,
        batch_size: int = 16,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        settings = settings or ModelSettings(spec=resolved.spec)
        self.resolved = resolved
        self.batch_size = batch_size
        self.fingerprint = resolved.fingerprint()
        self.tokenizer = tokenizer or load_tokenizer(resolved, settings.chat_template, settings.trust_remote_code)
        self.tokenizer.padding_side = "left"
        self.model = model or load_model(
            resolved, dtype=settings.dtype, trust_remote_code=settings.trust_remote_code
        )

    def render(self, request: ChatRequest) -> str:
        text = self.tokenizer.apply_chat_template(
            list(request.messages), tokenize=False, add_generation_prompt=True
        )
        return text + request.prefix

    @torch.inference_mode()
    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        encoded = [
            self.tokenizer(self.render(r), add_special_tokens=False)["input_ids"] for r in requests
        ]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        outputs: list[str] = [""] * len(requests)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer.pad(
                {"input_ids": [encoded[i] for i in idx]}, return_tensors="pt", padding=True
            ).to(self.model.device)
            torch.manual_seed(params.seed)
            sampled = params.temperature > 0
            generated = self.model.generate(
                **batch,
                max_new_tokens=params.max_new_tokens,
                do_sample=sampled,
                temperature=params.temperature if sampled else None,
                top_p=params.top_p if sampled else None,
                top_k=None,
                repetition_penalty=params.repetition_penalty,
                stop_strings=params.stop or None,
                tokenizer=self.tokenizer if params.stop else None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for i, text in zip(idx, texts, strict=True):
                outputs[i] = truncate_at_stop(text, params.stop)
        return outputs
