"""What every polyrise training run shares: loading, LoRA, resumable checkpoints and the atomic save of M(t+1).

Both trainers (DPO + NLL in `dpo.py`, question-alignment SFT in `sft.py`) are TRL trainers driven the same
way: checkpoints under `<out>.checkpoints` keyed by the run's identity, resumed after a kill, and the final
model written to a temp dir and renamed, so `<out>` is either absent or complete.

Under `accelerate launch` (`launch.py`) every process runs the same code; only the main process writes the run
key, the model and `training_log.jsonl` and deletes checkpoints, the others wait for it. Build the trainer's
`TrainingArguments` before calling `checkpoint_to_resume`: they set up the process group (backend, timeout).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from polyrise.console import make_console, progress
from polyrise.errors import PolyriseError
from polyrise.models import EMBEDDED_PREFIX, ResolvedModel, load_model, load_tokenizer
from polyrise.training.launch import LAUNCH_FIELDS
from polyrise.training.settings import TrainingSettings

CHECKPOINT_EVERY = 0.1
"""Checkpoint every this fraction of the optimizer steps (TRL/transformers ratio semantics)."""
_RUN_KEY_FILE = "polyrise-run-key.txt"
TRAINING_LOG = "training_log.jsonl"
_ELAPSED_FILE = "polyrise-elapsed-seconds.txt"


def _elapsed_callback(resume: str | None) -> Any:
    """A callback that keeps the whole training's seconds across a resume: each checkpoint stores them."""
    import time

    from transformers import TrainerCallback

    before = (
        float((Path(resume) / _ELAPSED_FILE).read_text())
        if resume and (Path(resume) / _ELAPSED_FILE).is_file()
        else 0.0
    )

    class Elapsed(TrainerCallback):
        start = time.perf_counter()

        def total(self) -> float:
            return before + time.perf_counter() - self.start

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    (folder / _ELAPSED_FILE).write_text(repr(self.total()))

    return Elapsed()


"""Written beside the weights: the trainer's log history, one JSON row per logged step, then the run summary."""


STEP_FIELDS = {
    "loss": "loss",
    "rewards/margins": "margin",
    "rewards/accuracies": "reward acc",
    "mean_token_accuracy": "token acc",
}
"""The logged metrics shown on the console per training step, and their names there."""


def step_callback() -> Any:
    """The trainer's console output, in place of its printer: a progress bar whose description holds the last
    step's metrics on a terminal, else one line per logged step (`step 3/8  loss 0.6931  ...  1.52 it/s`).
    The whole log dict goes to the `polyrise.training` logger (a run's stage log)."""
    from transformers import TrainerCallback

    logger = logging.getLogger("polyrise.training")
    console = make_console()

    class StepProgress(TrainerCallback):
        bar: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start, self.first_step = time.perf_counter(), state.global_step
            if state.is_local_process_zero and console.is_terminal:
                self.bar = progress(console, transient=False)
                self.bar.start()
                self.task = self.bar.add_task("training", total=state.max_steps, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if not state.is_local_process_zero or not logs:
                return
            logger.info("step %d/%d: %s", state.global_step, state.max_steps, json.dumps(logs))
            if "loss" not in logs:  # the summary at the end
                return
            shown = "  ".join(f"{name} {logs[key]:.4f}" for key, name in STEP_FIELDS.items() if key in logs)
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step, description=f"training  {shown}")
                return
            rate = (state.global_step - self.first_step) / (time.perf_counter() - self.start)
            console.print(f"step {state.global_step}/{state.max_steps}  {shown}  {rate:.2f} it/s", highlight=False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.stop()

    return StepProgress()


def divergence_callback() -> Any:
    """A callback that stops the training at the first logged step whose loss is not finite (NaN, inf) and keeps
    that step: `train_and_save` then fails instead of saving a diverged model as a success. Every process sees the
    same (gathered) loss, so all of them stop together."""
    from transformers import TrainerCallback

    class Divergence(TrainerCallback):
        step: int | None = None
        loss: float = math.nan

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            loss = (logs or {}).get("loss")
            if self.step is None and isinstance(loss, int | float) and not math.isfinite(loss):
                self.step, self.loss = state.global_step, loss
                control.should_training_stop = True

    return Divergence()


def checkpoints_dir(out_dir: Path) -> Path:
    """Where the checkpoints of the training that writes `out_dir` live until it finishes."""
    return out_dir.parent / (out_dir.name + ".checkpoints")


def world_size() -> int:
    """Processes in this training: the launcher's WORLD_SIZE (or MPI's), 1 for a plain process."""
    from accelerate.utils import get_int_from_env

    return int(get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1))


def _process_state() -> Any:
    """accelerate's process state when several processes train together, None for a single process."""
    if world_size() <= 1:
        return None
    from accelerate import PartialState

    # normally set up by the TrainingArguments already (`cpu` is then ignored); gloo on a CPU-only machine
    return PartialState(cpu=not torch.cuda.is_available())


def run_key(base: ResolvedModel, rows: Sequence[BaseModel], settings: TrainingSettings, seed: int, dtype: str) -> str:
    """Identity of a training run: a checkpoint is only resumed by the run that wrote it.

    How the run is launched does not count, the number of processes it trains on (the global batch) does.
    """
    h = hashlib.sha256()
    header = {
        "base": base.fingerprint(),
        "settings": settings.model_dump(mode="json", exclude=set(LAUNCH_FIELDS)),
        "seed": seed,
    }
    if (processes := world_size()) > 1:
        header["world_size"] = processes
    h.update(json.dumps({**header, "dtype": dtype}, sort_keys=True).encode())
    for row in rows:
        h.update(row.model_dump_json().encode() + b"\n")
    return h.hexdigest()


def checkpoint_to_resume(ckpt_dir: Path, key: str) -> str | None:
    """The latest checkpoint a killed run of this same training left, if any; other runs' are deleted.

    A checkpoint a kill cut short (its `trainer_state.json`, which the trainer writes last, missing or not whole)
    is deleted, never resumed. With several processes the main one checks and writes, and every process returns
    the same answer.
    """
    state = _process_state()
    if state is None or state.is_main_process:
        key_file = ckpt_dir / _RUN_KEY_FILE
        if ckpt_dir.is_dir() and not (key_file.is_file() and key_file.read_text() == key):
            shutil.rmtree(ckpt_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        key_file.write_text(key)
        for folder in _checkpoints(ckpt_dir):
            try:
                json.loads((folder / "trainer_state.json").read_text())
            except (OSError, ValueError):
                shutil.rmtree(folder)
    if state is not None:
        state.wait_for_everyone()
    complete = _checkpoints(ckpt_dir)
    return str(complete[-1]) if complete else None


def drop_checkpoints(ckpt_dir: Path) -> None:
    """Delete a training's checkpoints, its run key first: a kill midway (the tree deleted file by file, the
    weights perhaps before `trainer_state.json`) leaves checkpoints of no run, which the next start deletes
    (`checkpoint_to_resume`) instead of resuming one whose weights are gone."""
    (ckpt_dir / _RUN_KEY_FILE).unlink(missing_ok=True)
    shutil.rmtree(ckpt_dir, ignore_errors=True)


def _checkpoints(ckpt_dir: Path) -> list[Path]:
    """The `checkpoint-<step>` folders, by step."""
    found = [p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def trainer_arguments(settings: TrainingSettings, ckpt_dir: Path, seed: int) -> dict[str, Any]:
    """Keyword arguments common to TRL's `DPOConfig` and `SFTConfig` (bf16 only on a CUDA that has it)."""
    cuda = torch.cuda.is_available()
    return {
        "output_dir": str(ckpt_dir),
        "learning_rate": settings.lr,
        "num_train_epochs": settings.epochs,
        "per_device_train_batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "max_length": settings.max_length,
        "gradient_checkpointing": settings.gradient_checkpointing,
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "use_cpu": not cuda,
        "seed": seed,
        "logging_steps": 1,
        "logging_nan_inf_filter": False,  # a NaN loss is logged as NaN (not as the mean so far): `divergence_callback`
        "disable_tqdm": True,  # its printer is replaced by `step_callback` in `train_and_save`
        "report_to": "none",
        "save_strategy": "steps",
        "save_steps": CHECKPOINT_EVERY,
        "save_total_limit": 1,
    }


def load_for_training(
    base: ResolvedModel, settings: TrainingSettings, dtype: str, chat_template: str | None, trust_remote_code: bool
) -> tuple[Any, Any, Any]:
    """(tokenizer, model, LoRA config or None). `dtype="auto"` keeps full fine-tuning's weights in float32
    (bf16 autocast on CUDA): 5e-7-sized updates vanish in bf16 weights."""
    tokenizer = load_tokenizer(base, chat_template, trust_remote_code=trust_remote_code)
    train_dtype = "float32" if settings.method == "full" and dtype == "auto" else dtype
    model = load_model(base, dtype=train_dtype, trust_remote_code=trust_remote_code)
    if settings.method != "lora":
        return tokenizer, model, None
    from peft import LoraConfig

    lora = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=settings.lora_target_modules,
        task_type="CAUSAL_LM",
    )
    return tokenizer, model, lora


def _adapter_base_spec(base: ResolvedModel) -> str:
    """The spec an adapter records as its base; a local dir is made absolute so it resolves from any cwd."""
    path = Path(base.spec).expanduser()
    if base.spec.startswith(EMBEDDED_PREFIX) or not path.is_dir():
        return base.spec
    return str(path.resolve())


def _save(
    model: Any,
    tokenizer: Any,
    target: Path,
    settings: TrainingSettings,
    base: ResolvedModel,
    use_cache: bool,
    state_dict: dict[str, Any] | None = None,
) -> None:
    """Write M(t+1): a LoRA adapter that records its base, or full safetensors weights (merged for LoRA).

    `use_cache` is the base config's value, which `Trainer` overwrites with `TrainingArguments.use_cache`.
    `state_dict`: the weights gathered from a sharded model (FSDP, ZeRO-3), whose own parameters are shards.
    """
    if settings.method == "lora" and settings.save == "adapter":
        model.peft_config["default"].base_model_name_or_path = _adapter_base_spec(base)
        model.save_pretrained(target, state_dict=state_dict)
    else:
        if settings.method == "lora":
            assert state_dict is None, "a sharded LoRA model cannot be merged (train_and_save refuses it)"
            model = model.merge_and_unload()
        model.config.use_cache = use_cache
        model.save_pretrained(target, state_dict=state_dict)
        cfg_path = target / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        cfg_path.write_text(json.dumps(cfg, indent=2))
    tokenizer.save_pretrained(target)


def _is_sharded(trainer: Any) -> bool:
    """Whether no process holds the whole model: FSDP, or DeepSpeed ZeRO stage 3."""
    if trainer.is_fsdp_enabled:
        return True
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return trainer.is_deepspeed_enabled and plugin is not None and plugin.zero_stage == 3


def train_and_save(
    trainer: Any,
    resume: str | None,
    tokenizer: Any,
    out_dir: Path,
    settings: TrainingSettings,
    base: ResolvedModel,
    use_cache: bool,
) -> dict[str, float]:
    """Train (resuming from `resume`), save the model atomically to `out_dir`, drop the checkpoints.

    The trainer's log history (per-step loss, rewards, learning rate; the summary last) is saved with the model
    as `training_log.jsonl`. With several processes every one trains and returns the metrics (averaged over
    the processes by the trainer), the main one saves; with FSDP or DeepSpeed ZeRO-3 the weights are first
    gathered from their shards by accelerate (`get_state_dict`, a collective every process joins).
    Returns the last step's logged metrics merged with the run summary (`train_loss`, `train_runtime`).
    """
    accelerator = trainer.accelerator
    sharded = _is_sharded(trainer)
    if sharded and settings.method == "lora" and settings.save == "merged":
        raise PolyriseError(
            "LoRA under FSDP or DeepSpeed ZeRO-3 saves the adapter only: set training.save: adapter "
            "(polyrise loads an adapter dir as a model), or train LoRA with DDP (examples/accelerate/ddp.yaml)"
        )
    from transformers import PrinterCallback

    elapsed = _elapsed_callback(resume)
    trainer.add_callback(elapsed)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(step_callback())
    diverged = divergence_callback()
    trainer.add_callback(diverged)
    result = trainer.train(resume_from_checkpoint=resume)
    if diverged.step is not None:
        if accelerator.is_main_process:  # its checkpoints hold the diverged weights: a rerun starts afresh
            drop_checkpoints(checkpoints_dir(out_dir))
        raise PolyriseError(
            f"the training diverged: loss {diverged.loss} at step {diverged.step}/{trainer.state.max_steps}; no "
            f"model was saved to {out_dir}. Lower training.learning_rate (now {settings.lr:g}) or check the data"
        )
    # gathering the shards is a collective: every process takes part, the main one receives the weights
    state_dict = None
    if sharded:  # as `Trainer.save_model`: the DeepSpeed engine, or the FSDP-wrapped model
        state_dict = accelerator.get_state_dict(trainer.deepspeed if trainer.is_deepspeed_enabled else trainer.model)
    if accelerator.is_main_process:
        tmp = out_dir.parent / f".{out_dir.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _save(accelerator.unwrap_model(trainer.model), tokenizer, tmp, settings, base, use_cache, state_dict)
        with open(tmp / TRAINING_LOG, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row, default=str) + "\n" for row in trainer.state.log_history)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        drop_checkpoints(checkpoints_dir(out_dir))
    accelerator.wait_for_everyone()

    step_logs = [log for log in trainer.state.log_history if "loss" in log]
    metrics = {**(step_logs[-1] if step_logs else {}), **result.metrics}
    if resume and step_logs:  # the trainer's summary covers the resumed steps only; every step is logged
        metrics |= {"train_loss": sum(log["loss"] for log in step_logs) / len(step_logs), "resumed": 1}
        metrics["train_runtime"] = elapsed.total()
    return {key: float(value) for key, value in metrics.items() if isinstance(value, int | float)}
