"""Every private or internal TRL name polyrise relies on, in one place.

Written against TRL 1.16 (pyproject: `trl>=1.16,<1.17`, the range tested); TRL 1.15 and older lack
`trl.kernels.chunked_logprob._use_triton`, and their fused LM head scores only the labelled positions on every
device. `tests/test_trl_compat.py` checks each name, signature and hook below against the installed TRL, so a
TRL that moves one fails there rather than at import or mid-training. TRL's public API (`DPOConfig`,
`SFTConfig`, `SFTTrainer`, the trainers' documented arguments) is imported where it is used.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import DPOTrainer
from trl.kernels.chunked_logprob import _use_triton
from trl.models.utils import prepare_deepspeed

TRL_RANGE = ">=1.16,<1.17"
"""The TRL versions this module was written against and tested with (pyproject's requirement)."""


def fused_lm_head_logps(
    model: Any, inputs: dict[str, Any], labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(log-prob of each label, whether it was the argmax) from the fused LM head that `DPOTrainer` adds to its
    model (TRL's `add_fused_lm_head`), where that head scores only the labelled positions (a Triton device: CUDA,
    XPU); None elsewhere, where it scores every position in slow tiles. Both are shifted: column t is label t+1."""
    if not _use_triton(labels.device):
        return None
    out = model(**inputs, labels=labels, fused_lm_head=True)
    return out.log_probs, out.is_top1


class DPOTrainerHooks(DPOTrainer):
    """TRL's `DPOTrainer` with the private parts a subclass of it uses under polyrise's own names."""

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        # TRL's hook, called by `__init__` (and before evaluation) when `precompute_ref_log_probs` is set
        return self.reference_logps(dataset, batch_size)

    def reference_logps(self, dataset: Any, batch_size: int) -> Any:
        """`dataset` with the reference log-prob columns `ref_chosen_logps` and `ref_rejected_logps`."""
        raise NotImplementedError

    def reference_forward_model(self) -> Any:
        """The model that computes the reference log-probs: TRL's separate reference model (it loads one under
        FSDP only), else the policy itself, under DeepSpeed ZeRO-3 through TRL's engine that gathers its shards."""
        if self.ref_model is not None:
            return self.ref_model
        if self.is_deepspeed_enabled:
            assert self.model is not None  # the trainer was built with one
            self._precompute_engine = self._precompute_engine or prepare_deepspeed(self.model, self.accelerator)
            return self._precompute_engine
        return self.model

    def log_metric(self, mode: str, name: str, value: float) -> None:
        """Record one step's `value` of metric `name` (`mode`: "train" or "eval"); TRL averages and logs them."""
        self._metrics[mode][name].append(value)
