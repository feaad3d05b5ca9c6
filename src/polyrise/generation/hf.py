"""transformers engine: chat templates, length-sorted left-padded batches, greedy or sampled decoding."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, cast

import psutil
import torch
from transformers import DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from polyrise.errors import PolyriseError
from polyrise.generation.base import ChatRequest, LogLikelihood, check_fits, local_model, render_chat
from polyrise.generation.batching import left_pad
from polyrise.models import ResolvedModel, load_model, load_tokenizer, resolve_model
from polyrise.settings import EngineSettings, ModelSettings, SamplingSettings


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


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], int]:
    """(token ids of `context + continuation`, number of them that belong to the context), as lm-eval splits them.

    Trailing spaces and tabs of the context move to the continuation (" blue" after "The sky is "); a trailing
    newline stays (a chat prompt ends with one after the assistant header). The full string is tokenised once
    and the continuation is whatever follows the context's own token count, so a merge across the boundary is
    scored as part of the continuation. An empty context is replaced by a BOS (else EOS) token to condition on.
    Special tokens are added as `encode_text` adds them: a context rendered by a chat template that writes the BOS
    (Llama-3-Instruct's) is the same ids the engine generates from, with one BOS, not two.
    """
    stripped = context.rstrip(" \t")
    moved = context[len(stripped) :] + continuation
    whole = encode_text(tokenizer, stripped + moved)
    n_context = len(encode_text(tokenizer, stripped)) if stripped else 0
    if n_context == 0:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise PolyriseError("an empty context needs a BOS or EOS token to condition on; the tokenizer has none")
        whole, n_context = [prefix, *whole], 1
    n_context = min(n_context, len(whole) - 1)  # at least one scored token
    return whole, n_context


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a text to score: its own tokens, after the tokenizer's BOS where the tokenizer adds one by default
    and the text does not begin with it already.

    A plain-text context (few-shot classification, multiple choice) gets the BOS the model expects; a chat rendering
    whose template writes `{{ bos_token }}` keeps that one BOS, so its ids are the ids `complete` generates from
    (`add_special_tokens=False`). Nothing else the tokenizer adds by default (an EOS after the text) is added.
    """
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is not None and ids[:1] != [bos] and tokenizer("")["input_ids"][:1] == [bos]:
        ids.insert(0, bos)
    return ids


def _target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log P(targets[:, i]) under logits[:, i] ([rows, positions] from [rows, positions (+ 1), vocab]); a
    trailing logit past the targets (it predicts nothing scored) is left out."""
    logprobs = torch.log_softmax(logits[:, : targets.shape[1], :].float(), dim=-1)
    return logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _scored(token_logprobs: torch.Tensor) -> LogLikelihood:
    """A continuation's LogLikelihood from its tokens' log-probs (a 1-d tensor)."""
    return LogLikelihood(token_logprobs.sum().item(), tuple(token_logprobs.tolist()))


def _pack(groups: list[list[int]], rows: list[int], size: int) -> list[list[list[int]]]:
    """Consecutive groups in batches of at most `size` groups whose `rows` add up to at most `size` (a group's
    rows are at most `size`), so a shared-context batch never holds more rows than a per-pair one."""
    batches: list[list[list[int]]] = []
    load = 0
    for group, weight in zip(groups, rows, strict=True):
        if batches and len(batches[-1]) < size and load + weight <= size:
            batches[-1].append(group)
            load += weight
        else:
            batches.append([group])
            load = weight
    return batches


_TORCH_THREADS = torch.get_num_threads()  # torch's own default (physical cores), before any policy changes it


class ThreadPolicy:
    """Torch's intra-op threads on CPU = the cores other processes leave free (at least one), re-measured before
    each batch from the CPU time the machine and this process used since the last batch.

    Two threads on two cores, one of them taken by another process, wait for each other at every op: generation
    ran 3.5x slower than with one thread (`benchmarks/generation.py --hog`). `OMP_NUM_THREADS` fixes the count.
    """

    def __init__(self) -> None:
        self.cpus = sorted(os.sched_getaffinity(0))
        self.cores = min(_TORCH_THREADS, len(self.cpus))
        self.fixed = "OMP_NUM_THREADS" in os.environ
        self.process = psutil.Process()
        self.last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        """(wall clock, busy CPU seconds of the CPUs this process may run on, CPU seconds of this process)."""
        per_cpu, own = psutil.cpu_times(percpu=True), self.process.cpu_times()
        busy = sum(sum(t) - t.idle - getattr(t, "iowait", 0.0) for i, t in enumerate(per_cpu) if i in self.cpus)
        return time.monotonic(), busy, own.user + own.system

    def apply(self) -> int:
        """Set and return the thread count for the next batch."""
        now = self._sample()
        wall, busy, own = (a - b for a, b in zip(now, self.last, strict=True))
        if self.fixed or wall < 0.05:  # too short a window to measure: keep the count
            return torch.get_num_threads()
        self.last = now
        others = max(0.0, busy - own) / wall
        threads = max(1, min(self.cores, round(self.cores - others)))
        torch.set_num_threads(threads)
        return threads


class HFEngine:
    """Generate with a transformers causal LM. Pass `model`/`tokenizer` to reuse loaded objects."""

    @classmethod
    def from_settings(cls, settings: EngineSettings, model: ModelSettings | None = None) -> HFEngine:
        model = local_model(settings, model)
        return cls(resolve_model(model.spec), model, batch_size=settings.batch_size)

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
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)  # masked out anyway
        self.context: int | None = getattr(self.model.config, "max_position_embeddings", None)
        self.threads = ThreadPolicy() if self.model.device.type == "cpu" else None

    def _adapt_threads(self) -> None:
        if self.threads is not None:
            self.threads.apply()

    def render(self, request: ChatRequest) -> str:
        return render_chat(self.tokenizer, request)

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        rendered = [self.render(r) for r in requests]
        encoded = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in rendered]
        for ids, text in zip(encoded, rendered, strict=True):
            check_fits(len(ids), params.max_new_tokens, self.context, self.resolved.spec, text)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        outputs: list[str] = [""] * len(requests)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            tokens = self._decode([encoded[i] for i in idx], params)
            for i, toks in zip(idx, tokens, strict=True):
                outputs[i] = truncate_at_stop(self.tokenizer.decode(toks, skip_special_tokens=True), params.stop)
        return outputs

    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], max_tokens: int | None = None, *, share_contexts: bool = True
    ) -> list[LogLikelihood]:
        """Continuation log-probs of (context, continuation) texts, split into tokens as `encode_pair` does; only
        the first `max_tokens` continuation tokens when given.

        Pairs whose contexts are the same tokens (a few-shot prompt and each of its labels) run that context once
        and score their continuations on its KV cache (`_score_shared`); the other pairs, or all of them without
        `share_contexts` (the per-pair computation: the reference of tests and benchmarks), run whole in
        length-sorted left-padded batches (`_score_batch`). Both give the same log-probs up to fp32 rounding.
        """
        encoded = [encode_pair(self.tokenizer, context, continuation) for context, continuation in requests]
        if max_tokens is not None:
            encoded = [(ids[: n + max_tokens], n) for ids, n in encoded]
        for (ids, _), (context, _) in zip(encoded, requests, strict=True):
            check_fits(len(ids), 0, self.context, self.resolved.spec, context)
        by_context: dict[tuple[int, ...], list[int]] = {}
        for k, (ids, n) in enumerate(encoded):
            by_context.setdefault(tuple(ids[:n]), []).append(k)
        groups = list(by_context.values()) if share_contexts else [[k] for k in range(len(encoded))]
        # a context with more continuations than a batch holds runs once per batch-sized share of them
        groups = [g[s : s + self.batch_size] for g in groups for s in range(0, len(g), self.batch_size)]
        results: list[LogLikelihood] = [LogLikelihood(0.0, ())] * len(encoded)
        order = sorted((g[0] for g in groups if len(g) == 1), key=lambda k: -len(encoded[k][0]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for k, scored in zip(idx, self._score_batch([encoded[k] for k in idx]), strict=True):
                results[k] = scored
        shared = sorted((g for g in groups if len(g) > 1), key=lambda g: -encoded[g[0]][1])
        # the second pass of `_score_shared` has a row per continuation of two tokens or more
        rows = [max(1, sum(len(encoded[k][0]) - encoded[k][1] > 1 for k in g)) for g in shared]
        for batch in _pack(shared, rows, self.batch_size):
            contexts = [encoded[g[0]][0][: encoded[g[0]][1]] for g in batch]
            continuations = [[encoded[k][0][encoded[k][1] :] for k in g] for g in batch]
            for g, scores in zip(batch, self._score_shared(contexts, continuations), strict=True):
                for k, scored in zip(g, scores, strict=True):
                    results[k] = scored
        return results

    @torch.inference_mode()
    def _score_batch(self, seqs: list[tuple[list[int], int]]) -> list[LogLikelihood]:
        """Continuation log-probs of each (ids, n_context) row in one forward pass; logits only where scored."""
        self._adapt_threads()
        input_ids, mask, positions = left_pad([ids for ids, _ in seqs], self.pad_id, device=self.model.device)
        # left padding puts every continuation at the end: only the last `n_keep` positions' logits are needed
        n_keep = max(len(ids) - n_ctx for ids, n_ctx in seqs) + 1
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=n_keep)
        token_lp = _target_logprobs(out.logits[:, -n_keep:, :], input_ids[:, input_ids.shape[1] - n_keep + 1 :])
        return [
            _scored(token_lp[row, token_lp.shape[1] - (len(ids) - n_ctx) :]) for row, (ids, n_ctx) in enumerate(seqs)
        ]

    @torch.inference_mode()
    def _score_shared(
        self, contexts: list[list[int]], continuations: list[list[list[int]]]
    ) -> list[list[LogLikelihood]]:
        """Log-probs of each context's continuations, every context run once.

        One left-padded forward pass over the contexts fills a KV cache; each context's last logits score its
        continuations' first tokens. The continuations of two tokens or more then run in one more pass on that
        cache, copied to each of their rows, each row's padding placed between its context and its tokens.
        """
        self._adapt_threads()
        device = self.model.device
        cache = DynamicCache(config=self.model.config)
        input_ids, mask, positions = left_pad(contexts, self.pad_id, device=device)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        longer = [(c, ids) for c, conts in enumerate(continuations) for ids in conts if len(ids) > 1]
        rest: list[torch.Tensor] = []
        if longer:
            rows = torch.tensor([c for c, _ in longer], device=device)
            cache.batch_select_indices(rows)
            context_mask = mask[rows]
            # the input is all but the last token: logits at a token predict the next one
            cont_ids, cont_mask, cont_positions = left_pad([ids[:-1] for _, ids in longer], self.pad_id, device=device)
            targets = left_pad([ids[1:] for _, ids in longer], self.pad_id, device=device)[0]
            out = self.model(
                input_ids=cont_ids,
                attention_mask=torch.cat([context_mask, cont_mask], dim=1),
                position_ids=cont_positions + context_mask.sum(-1, keepdim=True),  # after the context's tokens
                past_key_values=cache,
                use_cache=True,
            )
            token_lp = _target_logprobs(out.logits, targets)
            rest = [token_lp[row, token_lp.shape[1] - (len(ids) - 1) :] for row, (_, ids) in enumerate(longer)]
        tails = iter(rest)
        return [
            [
                _scored(torch.cat([first[c, ids[:1]], next(tails) if len(ids) > 1 else first.new_empty(0)]))
                for ids in conts
            ]
            for c, conts in enumerate(continuations)
        ]

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
        self._adapt_threads()
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
        input_ids, mask, positions = left_pad(suffixes, self.pad_id, prefix=shared, device=device)
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
            # transformers types token ids as the legacy class LongTensor, which no tensor op returns
            scores = processors(cast(torch.LongTensor, history), out.logits[:, -1, :].float())
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
