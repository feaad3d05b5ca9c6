"""transformers engine: chat templates, length-sorted left-padded batches, greedy or sampled decoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from polyrise.config import ModelSettings, SamplingSettings
from polyrise.generation import ChatRequest, render_chat
from polyrise.models import ResolvedModel, load_model, load_tokenizer


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` at the earliest stop string (the stop string itself is dropped)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def _common_prefix_length(prompts: list[list[int]]) -> int:
    """Length of the token prefix all prompts share, leaving every prompt at least one token of its own."""
    shortest = min(map(len, prompts))
    n = 0
    while n < shortest - 1 and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n


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
        self.model = model or load_model(resolved, dtype=settings.dtype, trust_remote_code=settings.trust_remote_code)

        eos = self.model.generation_config.eos_token_id
        self.eos_ids = {*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id} - {None}

    def render(self, request: ChatRequest) -> str:
        return render_chat(self.tokenizer, request)

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        encoded = [self.tokenizer(self.render(r), add_special_tokens=False)["input_ids"] for r in requests]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        outputs: list[str] = [""] * len(requests)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            tokens = self._decode([encoded[i] for i in idx], params)
            for i, toks in zip(idx, tokens, strict=True):
                outputs[i] = truncate_at_stop(self.tokenizer.decode(toks, skip_special_tokens=True), params.stop)
        return outputs

    def _processors(self, params: SamplingSettings) -> LogitsProcessorList:
        processors = LogitsProcessorList()
        if params.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        if params.temperature > 0:
            processors.append(TemperatureLogitsWarper(params.temperature))
            if params.top_p < 1.0:
                processors.append(TopPLogitsWarper(params.top_p))
        return processors

    @torch.inference_mode()
    def _decode(self, prompts: list[list[int]], params: SamplingSettings) -> list[list[int]]:
        """Decode one batch (shared prefix, then left-padded suffixes), dropping each row once it ends.

        `model.generate` keeps computing finished rows until the longest is done; dropping them is what
        makes batches of uneven answers (translations stopping at `</translated>`) cheap.
        """
        device = self.model.device
        cache = DynamicCache(config=self.model.config)
        # Prefix sharing: the chat template's system prompt (and a translation instruction) is the same in
        # every row, so its KV is computed once and copied; padding goes between prefix and suffix.
        shared = _common_prefix_length(prompts)
        if shared:
            self.model(
                input_ids=torch.tensor([prompts[0][:shared]], device=device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache.batch_repeat_interleave(len(prompts))
        suffixes = [ids[shared:] for ids in prompts]
        width = max(map(len, suffixes))
        input_ids = torch.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for row, ids in enumerate(suffixes):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, shared + width - len(ids) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        processors = self._processors(params)
        rng = torch.Generator(device=device).manual_seed(params.seed)
        stop_window = max((len(s) for s in params.stop), default=0) + 1  # tokens: each is ≥ 1 character

        rows = list(range(len(prompts)))  # original index of each active row
        generated: list[list[int]] = [[] for _ in prompts]
        # prompt + generated tokens of active rows, for the repetition penalty
        history = torch.cat(
            [
                torch.tensor([prompts[0][:shared]] * len(prompts), dtype=torch.long, device=device).reshape(
                    len(prompts), shared
                ),
                input_ids,
            ],
            dim=1,
        )
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        for step in range(params.max_new_tokens):
            scores = processors(history, out.logits[:, -1, :].float())
            if params.temperature > 0:
                next_tokens = torch.multinomial(scores.softmax(-1), 1, generator=rng).squeeze(1)
            else:
                next_tokens = scores.argmax(-1)
            keep = []
            for j, token in enumerate(next_tokens.tolist()):
                row = rows[j]
                if token in self.eos_ids:
                    continue
                generated[row].append(token)
                if stop_window > 1 and any(
                    s in self.tokenizer.decode(generated[row][-stop_window:]) for s in params.stop
                ):
                    continue
                keep.append(j)
            if not keep or step == params.max_new_tokens - 1:
                break
            history = torch.cat([history, next_tokens[:, None]], dim=1)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            positions = positions[:, -1:] + 1
            if len(keep) < len(rows):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                history, mask, positions, next_tokens = (
                    history[index],
                    mask[index],
                    positions[index],
                    next_tokens[index],
                )
                rows = [rows[j] for j in keep]
            out = self.model(
                input_ids=next_tokens[:, None],
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
        return generated
