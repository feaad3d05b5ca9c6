"""DPO + NLL training of M(t+1) on preference pairs with M(t) as the reference model (TRL `DPOTrainer`).

The loss is TRL's `loss_type=["sigmoid", "sft"]`: the DPO sigmoid loss plus `nll_weight` times the NLL of the
chosen answer, as in "Language Imbalance Driven Rewarding" (arXiv 2410.08964).

`PackedDPOTrainer` computes that same loss with less work than TRL's default path:
- the reference log-probs are computed once, before training, by the policy itself (at step 0 it *is* M(t)), with
  no grad and in length-sorted batches, and kept in a persistent cache keyed by the reference's fingerprint and
  each (prompt, answer) token sequence: a resumed run, a rerun with another beta or NLL weight, the swapped and
  nll0 controls and every epoch reuse them, and full fine-tuning keeps no second model copy;
- each pair is one packed row `prompt | chosen | last prompt token again | rejected` with a block attention mask
  (the rejected answer sees the prompt, never the chosen one), so the prompt runs once instead of twice and a
  batch pads one row per pair, not two rows to the longest of both answers;
- logits only where an answer token is predicted (`packed_logps`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from trl import DPOConfig

from polyrise.console import progress as progress_bar
from polyrise.errors import PolyriseError
from polyrise.generation.cache import GenerationCache
from polyrise.models import ResolvedModel
from polyrise.records import PreferencePair
from polyrise.training._trl_compat import DPOTrainerHooks, fused_lm_head_logps
from polyrise.training.runs import (
    checkpoint_to_resume,
    checkpoints_dir,
    load_for_training,
    run_key,
    train_and_save,
    trainer_arguments,
)
from polyrise.training.settings import DPOSettings

if TYPE_CHECKING:
    import datasets
    from peft import PeftModel
    from transformers import PreTrainedModel

PAD, PROMPT, LAST, CHOSEN, AGAIN, REJECTED = -1, 0, 1, 2, 3, 4
"""Segments of a packed row: padding, the prompt but its last token, its last token, the chosen answer, the last
prompt token again (it predicts the rejected answer's first token), the rejected answer."""
_SEES = torch.zeros(6, 6, dtype=torch.bool)  # _SEES[query segment + 1, key segment + 1], keys at or before the query
for _query, _keys in {
    PROMPT: (PROMPT,),
    LAST: (PROMPT, LAST),
    CHOSEN: (PROMPT, LAST, CHOSEN),
    AGAIN: (PROMPT, AGAIN),
    REJECTED: (PROMPT, LAST, REJECTED),
}.items():
    for _key in _keys:
        _SEES[_query + 1, _key + 1] = True


def _preference_dataset(pairs: Sequence[PreferencePair], swap: bool = False) -> Any:
    """Pairs in TRL's conversational preference format, so the tokenizer's chat template is applied;
    `swap` exchanges chosen and rejected (the ablation control)."""
    from datasets import Dataset

    return Dataset.from_list([p.trl_example(swap) for p in pairs])


def _answers(example: dict[str, Any], max_length: int | None) -> tuple[list[int], list[int]]:
    """The chosen and rejected answer ids, each cut where TRL cuts prompt + answer (`keep_start`)."""
    room = None if max_length is None else max(max_length - len(example["prompt_ids"]), 0)
    return example["chosen_ids"][:room], example["rejected_ids"][:room]


def pack(examples: Sequence[dict[str, Any]], pad_token_id: int, max_length: int | None) -> dict[str, torch.Tensor]:
    """A batch of tokenized pairs as packed rows, left-padded (so every row's answers end at the right edge):
    `input_ids`, `position_ids`, `segments` (what each token is, `PAD`...`REJECTED`); the reference log-probs ride
    along when the examples have them."""
    rows, positions, segments = [], [], []
    for ex in examples:
        prompt = ex["prompt_ids"]
        chosen, rejected = _answers(ex, max_length)
        n = len(prompt)
        rows.append(prompt + chosen + prompt[-1:] + rejected)
        positions.append([*range(n + len(chosen)), n - 1, *range(n, n + len(rejected))])
        segments.append([PROMPT] * (n - 1) + [LAST] + [CHOSEN] * len(chosen) + [AGAIN] + [REJECTED] * len(rejected))
    width = max(map(len, rows))

    def padded(values: list[list[int]], fill: int) -> torch.Tensor:
        return torch.tensor([[fill] * (width - len(v)) + v for v in values])

    batch = {
        "input_ids": padded(rows, pad_token_id),
        "position_ids": padded(positions, 0),
        "segments": padded(segments, PAD),
    }
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        if key in examples[0]:
            batch[key] = torch.tensor([ex[key] for ex in examples])
    return batch


@dataclass
class PackedLogps:
    """Per-token results of a packed batch, for the label positions kept: `token_logps[:, t]` is the log-prob of
    the token after position t, `is_top1` whether it was the model's argmax, `segments` that token's segment."""

    token_logps: torch.Tensor
    is_top1: torch.Tensor
    segments: torch.Tensor

    def answer_logps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probs of the chosen and of the rejected answer of each row."""
        chosen = (self.token_logps * (self.segments == CHOSEN)).sum(dim=1)
        rejected = (self.token_logps * (self.segments == REJECTED)).sum(dim=1)
        return chosen, rejected


def packed_logps(model: Any, batch: dict[str, torch.Tensor], attn_implementation: str) -> PackedLogps:
    """One forward of packed rows; each answer's summed log-prob equals that of its own unpacked `prompt + answer`
    row. Logits only where an answer token is predicted: TRL's fused LM head on a Triton device (it scores only the
    labelled positions there), else the model's own head on the last columns that hold answers
    (`logits_to_keep`), where TRL's CPU fallback would score every position in slow tiles."""
    segments = batch["segments"]
    device = segments.device
    width = segments.size(1)
    query, key = segments[:, :, None] + 1, segments[:, None, :] + 1
    order = torch.arange(width, device=device)
    causal = order[None, :] <= order[:, None]
    itself = torch.eye(width, dtype=torch.bool, device=device)
    # (batch, 1, query, key); a padding token sees itself only, so no row of the mask is empty
    allowed = ((_SEES.to(device)[query, key] & causal) | itself)[:, None]
    if attn_implementation != "sdpa":  # eager attention adds the mask to the scores
        dtype = next(model.parameters()).dtype
        allowed = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    ids = batch["input_ids"]
    inputs = {"input_ids": ids, "attention_mask": allowed, "position_ids": batch["position_ids"], "use_cache": False}
    labels = ids.masked_fill((segments != CHOSEN) & (segments != REJECTED), -100)
    if (fused := fused_lm_head_logps(model, inputs, labels)) is not None:
        return PackedLogps(*fused, segments[:, 1:])
    first = int((segments == LAST).int().argmax(dim=1).min())  # the leftmost position that predicts an answer
    logits = model(**inputs, logits_to_keep=width - first).logits[:, :-1].float()
    targets = ids[:, first + 1 :]
    token_logps = logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
    return PackedLogps(token_logps, logits.argmax(-1) == targets, segments[:, first + 1 :])


class PackedDPOTrainer(DPOTrainerHooks):
    """TRL's `DPOTrainer` with packed pairs and cached reference log-probs (module docstring); same loss.

    `reference_cache`: where the reference log-probs persist (None: computed, not kept);
    `reference_key`: the reference model's identity (fingerprint and dtype) in their cache keys.
    """

    # narrower than Trainer's declarations: what this trainer is built with
    args: DPOConfig
    model: PreTrainedModel | PeftModel
    train_dataset: datasets.Dataset

    def __init__(
        self, *, args: DPOConfig, reference_cache: GenerationCache | None, reference_key: str, **kwargs: Any
    ) -> None:
        if args.loss_type != ["sigmoid", "sft"]:
            raise ValueError(f"PackedDPOTrainer computes sigmoid + sft only, not {args.loss_type}")
        self.reference_cache, self.reference_key = reference_cache, reference_key
        pad = kwargs["processing_class"].pad_token_id or 0  # padding is masked out: any id will do
        collate = functools.partial(pack, pad_token_id=pad, max_length=args.max_length)
        super().__init__(args=args, data_collator=collate, **kwargs)  # computes the reference log-probs

    def _cache_keys(self, example: dict[str, Any]) -> tuple[str, str]:
        """The reference log-prob cache keys of an example's (prompt, chosen) and (prompt, rejected) sequences."""
        chosen, rejected = (
            hashlib.sha256(json.dumps([self.reference_key, example["prompt_ids"], ids]).encode()).hexdigest()
            for ids in _answers(example, self.args.max_length)
        )
        return chosen, rejected

    def reference_logps(self, dataset: Any, batch_size: int) -> Any:
        """Reference log-probs of every pair as two dataset columns: from the cache, the rest computed by the
        untrained policy (adapter disabled) with no grad, longest rows first, split over the processes."""
        from accelerate.utils import gather_object
        from peft import PeftModel

        examples = list(dataset)  # read once: a dataset row is decoded from Arrow on every access
        keys = [self._cache_keys(ex) for ex in examples]
        known = self.reference_cache.get_json(k for pair in keys for k in pair) if self.reference_cache else {}
        todo = [i for i, pair in enumerate(keys) if not all(k in known for k in pair)]
        todo.sort(key=lambda i: -sum(map(len, _answers(examples[i], None))) - len(examples[i]["prompt_ids"]))
        mine = todo[self.accelerator.process_index :: self.accelerator.num_processes]
        model = self.reference_forward_model()
        policy = self.accelerator.unwrap_model(model)
        no_adapter = policy.disable_adapter() if isinstance(policy, PeftModel) else contextlib.nullcontext()
        found: dict[str, float] = {}
        with torch.no_grad(), no_adapter, self.accelerator.autocast(), progress_bar() as progress:
            task = progress.add_task(f"reference log-probs ({len(todo)} of {len(keys)} pairs)", total=len(mine))
            for start in range(0, len(mine), batch_size):
                part = mine[start : start + batch_size]
                rows = self.data_collator([examples[i] for i in part])
                batch = {k: v.to(self.accelerator.device) for k, v in rows.items()}
                scored = packed_logps(model, batch, policy.config._attn_implementation)
                for i, chosen, rejected in zip(part, *scored.answer_logps(), strict=True):
                    found[keys[i][0]], found[keys[i][1]] = chosen.item(), rejected.item()
                progress.advance(task, len(part))
        if self.accelerator.num_processes > 1:
            found = {k: v for part in gather_object([found]) for k, v in part.items()}
        if self.reference_cache is not None and self.accelerator.is_main_process and found:
            self.reference_cache.put_json(found)
        known |= found
        dataset = dataset.add_column("ref_chosen_logps", [known[c] for c, _ in keys])
        return dataset.add_column("ref_rejected_logps", [known[r] for _, r in keys])

    def compute_loss(
        self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """TRL's sigmoid + sft loss on a packed batch, and TRL's reward metrics."""
        mode = "train" if self.model.training else "eval"
        scored = packed_logps(model, inputs, self.model.config._attn_implementation)
        chosen_logps, rejected_logps = scored.answer_logps()
        chosen_logratios = chosen_logps - inputs["ref_chosen_logps"]
        rejected_logratios = rejected_logps - inputs["ref_rejected_logps"]
        dpo = -F.logsigmoid(self.beta * (chosen_logratios - rejected_logratios)).mean()
        chosen_tokens = scored.segments == CHOSEN
        nll = -scored.token_logps[chosen_tokens].mean()
        loss = self.loss_weights[0] * dpo + self.loss_weights[1] * nll

        gather = self.accelerator.gather
        chosen_rewards = self.beta * chosen_logratios.detach()
        rejected_rewards = self.beta * rejected_logratios.detach()
        top1 = gather((scored.is_top1 & chosen_tokens).sum()).sum() / gather(chosen_tokens.sum()).sum().clamp(min=1)
        for metric, value in {
            "mean_token_accuracy": top1,
            "rewards/chosen": gather(chosen_rewards).mean(),
            "rewards/rejected": gather(rejected_rewards).mean(),
            "rewards/accuracies": gather((chosen_rewards > rejected_rewards).float()).mean(),
            "rewards/margins": gather(chosen_rewards - rejected_rewards).mean(),
            "logps/chosen": gather(chosen_logps.detach()).mean(),
            "logps/rejected": gather(rejected_logps.detach()).mean(),
        }.items():
            self.log_metric(mode, metric, value.item())
        return (loss, scored) if return_outputs else loss


def dpo_config(settings: DPOSettings, ckpt_dir: Path, seed: int, **overrides: Any) -> DPOConfig:
    """The DPO + NLL training arguments of a run (`overrides`: what a benchmark changes)."""
    return DPOConfig(
        **{
            "loss_type": ["sigmoid", "sft"],
            "loss_weights": [1.0, settings.nll_weight],
            "beta": settings.beta,
            "disable_dropout": settings.method == "full" or settings.lora_dropout == 0,
            "precompute_ref_log_probs": True,
            "precompute_ref_batch_size": 2 * settings.batch_size,
            **trainer_arguments(settings, ckpt_dir, seed),
            **overrides,
        }
    )


def train_dpo(
    base: ResolvedModel,
    pairs: Sequence[PreferencePair],
    out_dir: Path,
    settings: DPOSettings,
    *,
    seed: int = 0,
    dtype: str = "auto",
    chat_template: str | None = None,
    trust_remote_code: bool = False,
    reference_cache: Path | None = None,
    report: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Train M(t+1) from `base` = M(t) (policy init and reference); save it atomically to `out_dir`.

    Checkpoints go to `<out_dir>.checkpoints`; a killed run resumes from the latest one, and they are removed
    once the model is saved. `reference_cache`: the SQLite file the reference log-probs persist in (a run's
    `generations.sqlite`). `report`: the training arguments that send its metrics to a tracker
    (`tracking.trainer_reporting`). Returns the last step's logged metrics (`loss`, `rewards/accuracies`,
    `rewards/margins`, ...) and the summary (`train_loss`, `train_runtime`).
    """
    if not pairs:
        raise PolyriseError(f"no preference pairs to train {out_dir} on (the filters may have rejected all)")
    out_dir = Path(out_dir)
    ckpt_dir = checkpoints_dir(out_dir)
    args = dpo_config(settings, ckpt_dir, seed, **(report or {}))
    resume = checkpoint_to_resume(ckpt_dir, run_key(base, pairs, settings, seed, dtype))  # after the args: see runs.py
    tokenizer, model, peft_config = load_for_training(base, settings, dtype, chat_template, trust_remote_code)
    use_cache = model.config.use_cache
    cache = GenerationCache(reference_cache) if reference_cache else None
    try:
        trainer = PackedDPOTrainer(
            model=model,
            args=args,
            train_dataset=_preference_dataset(pairs, settings.swap_preferences),
            processing_class=tokenizer,
            peft_config=peft_config,
            reference_cache=cache,
            reference_key=json.dumps([base.fingerprint(), str(model.dtype)]),
        )
    finally:
        if cache is not None:
            cache.close()
    if len(trainer.train_dataset) == 0:
        raise PolyriseError(
            f"each prompt fills training.max_length={settings.max_length} tokens: no pair is left to train on"
        )
    return train_and_save(trainer, resume, tokenizer, out_dir, settings, base, use_cache)
