"""DPO + NLL training of M(t+1) on preference pairs with M(t) as the reference model (TRL `DPOTrainer`).

The loss is TRL's `loss_type=["sigmoid", "sft"]`: the DPO sigmoid loss plus `nll_weight` times the NLL of the
chosen answer, as in "Language Imbalance Driven Rewarding" (arXiv 2410.08964).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrise.config import DPOSettings
from polyrise.errors import PolyriseError
from polyrise.models import ResolvedModel, load_model
from polyrise.records import PreferencePair
from polyrise.training.runs import (
    checkpoint_to_resume,
    checkpoints_dir,
    load_for_training,
    run_key,
    train_and_save,
    trainer_arguments,
)


def _preference_dataset(pairs: Sequence[PreferencePair], swap: bool = False) -> Any:
    """Pairs in TRL's conversational preference format, so the tokenizer's chat template is applied;
    `swap` exchanges chosen and rejected (the ablation control)."""
    from datasets import Dataset

    rows = []
    for p in pairs:
        chosen, rejected = (p.rejected, p.chosen) if swap else (p.chosen, p.rejected)
        rows.append(
            {
                "prompt": [{"role": "user", "content": p.prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return Dataset.from_list(rows)


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
) -> dict[str, float]:
    """Train M(t+1) from `base` = M(t) (policy init and reference); save it atomically to `out_dir`.

    Checkpoints go to `<out_dir>.checkpoints`; a killed run resumes from the latest one, and they are removed
    once the model is saved. With LoRA the reference is the base with the adapter disabled; with full
    fine-tuning a frozen second copy is loaded. Returns the last step's logged metrics
    (`loss`, `rewards/accuracies`, `rewards/margins`, ...) and the summary (`train_loss`, `train_runtime`).
    """
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise PolyriseError(f"no preference pairs to train {out_dir} on (the filters may have rejected all)")
    out_dir = Path(out_dir)
    ckpt_dir = checkpoints_dir(out_dir)
    args = DPOConfig(
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, settings.nll_weight],
        beta=settings.beta,
        disable_dropout=settings.method == "full" or settings.lora_dropout == 0,
        **trainer_arguments(settings, ckpt_dir, seed),
    )
    resume = checkpoint_to_resume(ckpt_dir, run_key(base, pairs, settings, seed, dtype))  # after the args: see runs.py
    tokenizer, model, peft_config = load_for_training(base, settings, dtype, chat_template, trust_remote_code)
    use_cache = model.config.use_cache
    ref_model = None if peft_config else load_model(base, dtype=dtype, trust_remote_code=trust_remote_code)
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=_preference_dataset(pairs, settings.swap_preferences),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    if len(trainer.train_dataset) == 0:
        raise PolyriseError(
            f"each prompt fills training.max_length={settings.max_length} tokens: no pair is left to train on"
        )
    return train_and_save(trainer, resume, tokenizer, out_dir, settings, base, use_cache)
