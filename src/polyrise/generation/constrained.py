"""Constrained decoding: only the continuations " " + label of a label set can be generated (few-shot classification).

Each token that does not continue some label is masked out by `LabelTrieLogitsProcessor`, over a prefix trie of
the labels' token sequences, so the model cannot answer anything but a label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import DynamicCache

from polyrise.console import progress as progress_bar
from polyrise.errors import PolyriseError
from polyrise.generation.base import Engine
from polyrise.generation.batching import left_pad
from polyrise.generation.hf import encode_pair


class LabelTrie:
    """Prefix trie of the labels' token sequences: which tokens may come next, and which sequences are labels.

    EOS may follow a complete label (it ends a label that a longer one extends); a sequence is finished once it
    is a label no other label extends, or a label followed by EOS.
    """

    def __init__(self, sequences: Mapping[str, Sequence[int]], eos_id: int) -> None:
        self.eos_id = eos_id
        self.labels: dict[tuple[int, ...], str] = {}
        self.next: dict[tuple[int, ...], set[int]] = {}
        for label, seq in sequences.items():
            key = tuple(seq)
            if not key or eos_id in key:
                raise PolyriseError(f"label {label!r} must be one or more tokens other than EOS, not {list(key)}")
            if key in self.labels:
                raise PolyriseError(f"labels {self.labels[key]!r} and {label!r} have the same tokens {list(key)}")
            self.labels[key] = label
            for i in range(len(key)):
                self.next.setdefault(key[:i], set()).add(key[i])

    def finished(self, tokens: Sequence[int]) -> bool:
        key = tuple(tokens)
        return (bool(key) and key[-1] == self.eos_id) or (key in self.labels and key not in self.next)

    def allowed(self, tokens: Sequence[int]) -> list[int]:
        """Tokens that may follow `tokens`: those continuing a label, EOS after a label; only EOS once finished."""
        key = tuple(tokens)
        if self.finished(key):
            return [self.eos_id]
        if key not in self.next:
            raise PolyriseError(f"tokens {list(key)} do not start any label")
        return [*self.next[key], *([self.eos_id] if key in self.labels else [])]

    def label(self, tokens: Sequence[int]) -> str:
        """The label that finished `tokens` spell (a trailing EOS dropped)."""
        key = tuple(tokens)
        return self.labels[key[:-1] if key and key[-1] == self.eos_id else key]


class LabelTrieLogitsProcessor:
    """Sets every token that may not follow a row's generated tokens (per its LabelTrie) to -inf.

    `input_ids` are the left-padded prompts (`prompt_width` columns) followed by the generated tokens.
    """

    def __init__(self, tries: Sequence[LabelTrie], prompt_width: int) -> None:
        self.tries = tries
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        for row, (trie, ids) in enumerate(zip(self.tries, input_ids[:, self.prompt_width :].tolist(), strict=True)):
            allowed[row, trie.allowed(ids)] = True
        return scores.masked_fill(~allowed, -math.inf)


def _label_tokens(tokenizer: Any, prompt: str, labels: Sequence[str]) -> tuple[list[int], dict[str, list[int]]]:
    """The prompt's ids and each label's ids as the continuation " " + label, split as `encode_pair` does."""
    split = {label: encode_pair(tokenizer, prompt, " " + label) for label in labels}
    prompts = {tuple(whole[:n]) for whole, n in split.values()}
    if len(prompts) > 1:
        raise PolyriseError(f"the labels merge differently with the end of the prompt {prompt[-40:]!r}")
    return list(prompts.pop()), {label: whole[n:] for label, (whole, n) in split.items()}


@torch.inference_mode()
def _generate_batch(
    model: Any, prompts: list[list[int]], tries: list[LabelTrie], pad_id: int, temperature: float, rng: torch.Generator
) -> list[list[int]]:
    """Left-padded constrained decoding of one batch; each row's tokens up to where its trie says finished."""
    input_ids, mask, positions = left_pad(prompts, pad_id, device=model.device)
    width = input_ids.shape[1]
    processor = LabelTrieLogitsProcessor(tries, width)
    cache = DynamicCache(config=model.config)
    step_ids = input_ids
    for _ in range(1 + max(len(key) for trie in tries for key in trie.labels)):  # enough to finish every label
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        scores = processor(input_ids, out.logits[:, -1, :].float())
        if temperature > 0:
            step_ids = torch.multinomial((scores / temperature).softmax(-1), 1, generator=rng)
        else:
            step_ids = scores.argmax(-1, keepdim=True)
        input_ids = torch.cat([input_ids, step_ids], dim=1)
        generated = input_ids[:, width:].tolist()
        if all(trie.finished(ids) for trie, ids in zip(tries, generated, strict=True)):
            break
        mask = torch.cat([mask, mask.new_ones((len(prompts), 1))], dim=1)
        positions = positions[:, -1:] + 1
    # finished rows were fed EOS until the last row finished: cut each at its first finished prefix
    return [
        next(ids[:n] for n in range(1, len(ids) + 1) if trie.finished(ids[:n]))
        for trie, ids in zip(tries, generated, strict=True)
    ]


def generate_labels(
    engine: Engine,
    prompts: Sequence[str],
    labels: Sequence[str],
    *,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[tuple[str, list[int]]]:
    """Decode " " + one of `labels` after every prompt: (label, generated token ids) per prompt, in order.

    Greedy, or sampled at `temperature` > 0 from a generator seeded with `seed`. Every token that does not
    continue a label is masked out, so the ids are always exactly one label's tokens (plus EOS where the model
    ended a label that a longer label extends). Prompts are decoded in length-sorted, left-padded batches of the
    engine's batch size. It masks the model's logits, so it needs a local (HF) engine.
    """
    from polyrise.generation.hf import HFEngine

    if not isinstance(engine, HFEngine):
        raise PolyriseError(
            f"constrained decoding masks the model's logits: it needs a local (hf) engine, not {type(engine).__name__}"
            " (use constrain: loglik)"
        )
    model, tokenizer, batch_size = engine.model, engine.tokenizer, engine.batch_size
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise PolyriseError("constrained generation needs the tokenizer's EOS token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    tries: dict[tuple[tuple[int, ...], ...], LabelTrie] = {}  # one per distinct tokenisation of the labels
    encoded: list[tuple[list[int], LabelTrie]] = []
    for prompt in prompts:
        ids, sequences = _label_tokens(tokenizer, prompt, labels)
        key = tuple(tuple(seq) for seq in sequences.values())
        if key not in tries:
            tries[key] = LabelTrie(sequences, eos_id)
        encoded.append((ids, tries[key]))
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i][0]))
    rng = torch.Generator(device=model.device).manual_seed(seed)
    results: list[tuple[str, list[int]]] = [("", [])] * len(prompts)
    with progress_bar() as progress:
        task = progress.add_task("generating labels", total=len(prompts))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch_tries = [encoded[i][1] for i in idx]
            tokens = _generate_batch(model, [encoded[i][0] for i in idx], batch_tries, pad_id, temperature, rng)
            for i, trie, ids in zip(idx, batch_tries, tokens, strict=True):
                results[i] = (trie.label(ids), ids)
            progress.advance(task, len(idx))
    return results
