"""The trainers' settings, torch-free (as TRL keeps `dpo_config.py` apart from `dpo_trainer.py`): the run config
composes them, the trainers (`dpo.py`, `sft.py`) read them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from polyrise.settings import MAX_TOKENS, Section


class TrainingSettings(Section):
    """What every trainer shares: LoRA or full fine-tuning, optimisation, saving, launching."""

    method: Literal["lora", "full"] = "lora"
    learning_rate: float | None = Field(default=None, gt=0.0, le=1.0)
    """Default: 5e-7 for full fine-tuning (the paper), 5e-5 for LoRA."""
    epochs: float = Field(default=1.0, gt=0.0, le=1000.0)
    batch_size: int = Field(default=4, ge=1, le=65536)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=65536)
    max_length: int = Field(default=512, ge=16, le=MAX_TOKENS)
    lora_r: int = Field(default=16, ge=1, le=65536)
    lora_alpha: int = Field(default=32, ge=1, le=65536)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    lora_target_modules: list[str] | str = "all-linear"
    save: Literal["merged", "adapter"] = "merged"
    """`merged`: full safetensors weights; `adapter`: LoRA adapter + the base recorded in its config."""
    gradient_checkpointing: bool = False
    num_processes: int = Field(default=1, ge=1, le=65536)
    """Processes (GPUs) the training is launched on through accelerate; >1 launches `accelerate launch` (DDP
    unless `accelerate_config` says FSDP or DeepSpeed). `batch_size` is per process: the global batch is
    batch_size x gradient_accumulation_steps x processes. 1 with no `accelerate_config`: train in-process."""
    accelerate_config: Path | None = None
    """An accelerate config file (examples/accelerate/*.yaml; a relative path is taken from the working dir).
    Given, training always goes through `accelerate launch --config_file` with the file's `num_processes`,
    unless `num_processes` is set >1, which overrides the file's."""

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 5e-7 if self.method == "full" else 5e-5


class DPOSettings(TrainingSettings):
    """DPO + NLL (TRL loss_type ["sigmoid", "sft"]) with the previous iterate as reference."""

    beta: float = Field(default=0.1, gt=0.0, le=1000.0)
    nll_weight: float = Field(default=1.0, ge=0.0, le=1000.0)
    swap_preferences: bool = False
    """Ablation control: train on every pair with chosen and rejected exchanged (the reward turned upside down;
    it should hurt). The pairs file is unchanged."""


class SFTSettings(TrainingSettings):
    """Supervised fine-tuning on the completion only (question alignment)."""
