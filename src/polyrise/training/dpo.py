"""DPO + NLL training of M(t+1) on preference pairs with M(t) as the reference model (TRL `DPOTrainer`).

The loss is TRL's `loss_type=["sigmoid", "sft"]`: the DPO sigmoid loss plus `nll_weight` times the NLL of the
chosen answer, as in "Language Imbalance Driven Rewarding" (arXiv 2410.08964).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from polyrise.config import TrainingSettings
from polyrise.errors import PolyriseError
from polyrise.models import EMBEDDED_PREFIX, ResolvedModel, load_model, load_tokenizer
from polyrise.records import PreferencePair

CHECKPOINT_EVERY = 0.1
"""Checkpoint every this fraction of the optimizer steps (TRL/transformers ratio semantics)."""
_RUN_KEY_FILE = "polyrise-run-key.txt"


def checkpoints_dir(out_dir: Path) -> Path:
    """Where the checkpoints of the training that writes `out_dir` live until it finishes."""
    return out_dir.parent / (out_dir.name + ".checkpoints")


def _preference_dataset(pairs: Sequence[PreferencePair]) -> Any:
    """Pairs in TRL's conversational preference format, so the tokenizer's chat template is applied."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": p.prompt}],
                "chosen": [{"role": "assistant", "content": p.chosen}],
                "rejected": [{"role": "assistant", "content": p.rejected}],
            }
            for p in pairs
        ]
    )


def _adapter_base_spec(base: ResolvedModel) -> str:
    """The spec an adapter records as its base; a local dir is made absolute so it resolves from any cwd."""
    path = Path(base.spec).expanduser()
    if base.spec.startswith(EMBEDDED_PREFIX) or not path.is_dir():
        return base.spec
    return str(path.resolve())


def _run_key(
    base: ResolvedModel, pairs: Sequence[PreferencePair], settings: TrainingSettings, seed: int, dtype: str
) -> str:
    """Identity of a training run: a checkpoint is only resumed by the run that wrote it."""
    h = hashlib.sha256()
    header = {"base": base.fingerprint(), "settings": settings.model_dump(mode="json"), "seed": seed}
    h.update(json.dumps({**header, "dtype": dtype}, sort_keys=True).encode())
    for pair in pairs:
        h.update(pair.model_dump_json().encode() + b"\n")
    return h.hexdigest()


def _checkpoint_to_resume(ckpt_dir: Path, run_key: str) -> str | None:
    """The latest checkpoint a killed run of this same training left, if any; other runs' are deleted."""
    from transformers.trainer_utils import get_last_checkpoint

    key_file = ckpt_dir / _RUN_KEY_FILE
    if ckpt_dir.is_dir() and not (key_file.is_file() and key_file.read_text() == run_key):
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(run_key)
    return get_last_checkpoint(str(ckpt_dir))


def _save(
    model: Any, tokenizer: Any, target: Path, settings: TrainingSettings, base: ResolvedModel, use_cache: bool
) -> None:
    """Write M(t+1): a LoRA adapter that records its base, or full safetensors weights (merged for LoRA).

    `use_cache` is the base config's value, which `Trainer` overwrites with `TrainingArguments.use_cache`.
    """
    if settings.method == "lora" and settings.save == "adapter":
        model.peft_config["default"].base_model_name_or_path = _adapter_base_spec(base)
        model.save_pretrained(target)
    else:
        if settings.method == "lora":
            model = model.merge_and_unload()
        model.config.use_cache = use_cache
        model.save_pretrained(target)
        cfg_path = target / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        cfg_path.write_text(json.dumps(cfg, indent=2))
    tokenizer.save_pretrained(target)


def train_dpo(
    base: ResolvedModel,
    pairs: Sequence[PreferencePair],
    out_dir: Path,
    settings: TrainingSettings,
    *,
    seed: int = 0,
    dtype: str = "auto",
    chat_template: str | None = None,
    trust_remote_code: bool = False,
) -> dict[str, float]:
    """Train M(t+1) from `base` = M(t) (policy init and reference); save it atomically to `out_dir`.

    Checkpoints go to `<out_dir>.checkpoints`; a killed run resumes from the latest one, and they are removed
    once the model is saved. With LoRA the reference is the base with the adapter disabled; with full
    fine-tuning a frozen second copy is loaded. `dtype="auto"` keeps full fine-tuning's weights in float32
    (bf16 autocast on CUDA): 5e-7-sized updates vanish in bf16 weights. Returns the last step's logged metrics
    (`loss`, `rewards/accuracies`, `rewards/margins`, ...) and the summary (`train_loss`, `train_runtime`).
    """
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise PolyriseError(f"no preference pairs to train {out_dir} on (the filters may have rejected all)")
    out_dir = Path(out_dir)
    ckpt_dir = checkpoints_dir(out_dir)
    resume = _checkpoint_to_resume(ckpt_dir, _run_key(base, pairs, settings, seed, dtype))

    cuda = torch.cuda.is_available()
    args = DPOConfig(
        output_dir=str(ckpt_dir),
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, settings.nll_weight],
        beta=settings.beta,
        learning_rate=settings.lr,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        max_length=settings.max_length,
        gradient_checkpointing=settings.gradient_checkpointing,
        disable_dropout=settings.method == "full" or settings.lora_dropout == 0,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        seed=seed,
        logging_steps=1,
        disable_tqdm=False,
        report_to="none",
        save_strategy="steps",
        save_steps=CHECKPOINT_EVERY,
        save_total_limit=1,
    )

    tokenizer = load_tokenizer(base, chat_template, trust_remote_code=trust_remote_code)
    train_dtype = "float32" if settings.method == "full" and dtype == "auto" else dtype
    model = load_model(base, dtype=train_dtype, trust_remote_code=trust_remote_code)
    use_cache = model.config.use_cache
    peft_config = None
    ref_model = None
    if settings.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=settings.lora_target_modules,
            task_type="CAUSAL_LM",
        )
    else:
        ref_model = load_model(base, dtype=dtype, trust_remote_code=trust_remote_code)

    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=_preference_dataset(pairs),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    if len(trainer.train_dataset) == 0:
        raise PolyriseError(
            f"each prompt fills training.max_length={settings.max_length} tokens: no pair is left to train on"
        )
    result = trainer.train(resume_from_checkpoint=resume)

    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _save(trainer.accelerator.unwrap_model(trainer.model), tokenizer, tmp, settings, base, use_cache)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    shutil.rmtree(ckpt_dir)

    step_logs = [log for log in trainer.state.log_history if "loss" in log]
    metrics = {**(step_logs[-1] if step_logs else {}), **result.metrics}
    return {key: float(value) for key, value in metrics.items() if isinstance(value, int | float)}
