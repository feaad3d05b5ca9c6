"""Question-alignment SFT (TRL `SFTTrainer`): the loss covers only the completion, the question's translation.

The examples are conversational prompt-completion rows, so the chat template is applied and TRL's
`completion_only_loss` masks every prompt token (label -100); LoRA by default, like the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrise.errors import PolyriseError
from polyrise.models import ResolvedModel
from polyrise.records import QuestionPair
from polyrise.training.runs import (
    checkpoint_to_resume,
    checkpoints_dir,
    load_for_training,
    run_key,
    train_and_save,
    trainer_arguments,
)
from polyrise.training.settings import SFTSettings


def _completion_dataset(pairs: Sequence[QuestionPair]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([p.trl_example() for p in pairs])


def train_sft(
    base: ResolvedModel,
    pairs: Sequence[QuestionPair],
    out_dir: Path,
    settings: SFTSettings,
    *,
    seed: int = 0,
    dtype: str = "auto",
    chat_template: str | None = None,
    trust_remote_code: bool = False,
    report: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Fine-tune `base` on question pairs (completion-only loss); save it atomically to `out_dir`.

    `settings` are the trainers' shared settings (method, learning rate, epochs, batch, LoRA, save); DPO's
    `beta`, `nll_weight` and `swap_preferences` are not among them, so they cannot change an SFT run's key.
    A killed run resumes from `<out_dir>.checkpoints`. `report`: the training arguments that send its metrics to
    a tracker (`tracking.trainer_reporting`).
    Returns the last step's logged metrics and the summary (`train_loss`, `train_runtime`).
    """
    from trl import SFTConfig, SFTTrainer

    if not pairs:
        raise PolyriseError(f"no question pairs to train {out_dir} on (every row was missing or dropped)")
    out_dir = Path(out_dir)
    ckpt_dir = checkpoints_dir(out_dir)
    args = SFTConfig(completion_only_loss=True, **(trainer_arguments(settings, ckpt_dir, seed) | (report or {})))
    resume = checkpoint_to_resume(ckpt_dir, run_key(base, pairs, settings, seed, dtype))  # after the args: see runs.py
    tokenizer, model, peft_config = load_for_training(base, settings, dtype, chat_template, trust_remote_code)
    use_cache = model.config.use_cache
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=_completion_dataset(pairs),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    return train_and_save(trainer, resume, tokenizer, out_dir, settings, base, use_cache)
