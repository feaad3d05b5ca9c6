"""The private TRL names and hooks that `polyrise.training._trl_compat` relies on, checked against the installed
TRL: a TRL upgrade that renames, removes or re-signs one fails here, not at import or mid-training."""

import dataclasses
import inspect
import tomllib
from pathlib import Path

import pytest
import torch
import trl
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from trl import DPOTrainer

from polyrise.training import _trl_compat
from polyrise.training.dpo import PackedDPOTrainer

OVERRIDDEN = {
    "_precompute_ref_logps": ["self", "dataset", "name", "batch_size"],
    "compute_loss": ["self", "model", "inputs", "return_outputs", "num_items_in_batch"],
}
"""The `DPOTrainer` methods polyrise's trainers override, with the parameters the overrides take."""


def _params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_pyproject_requires_the_trl_range_the_compat_module_was_written_for():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (trl_req,) = [Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "trl"]
    assert trl_req.specifier == SpecifierSet(_trl_compat.TRL_RANGE)
    assert trl.__version__ in trl_req.specifier, f"installed trl {trl.__version__} is outside the tested range"


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_each_overridden_trl_method_exists_with_the_parameters_our_override_takes(name):
    assert _params(getattr(DPOTrainer, name)) == OVERRIDDEN[name]
    ours = next(cls.__dict__[name] for cls in PackedDPOTrainer.__mro__ if name in cls.__dict__)
    assert _params(ours) == OVERRIDDEN[name]


def test_every_override_of_a_dpo_trainer_method_is_checked():
    """A new override of a TRL method must be added to OVERRIDDEN (and so be checked above)."""
    ours = {
        name
        for cls in (_trl_compat.DPOTrainerHooks, PackedDPOTrainer)
        for name, value in vars(cls).items()
        if callable(value) and name != "__init__"
    }
    assert ours & set(dir(DPOTrainer)) == set(OVERRIDDEN)


def test_dpo_trainer_init_calls_the_precompute_hook_and_sets_the_attributes_the_hooks_read():
    source = inspect.getsource(DPOTrainer.__init__)
    assert "self._precompute_ref_logps(" in source
    for attribute in ("_metrics", "_precompute_engine", "ref_model", "beta", "loss_weights"):
        assert f"self.{attribute} =" in source, attribute


def test_private_functions_keep_their_signatures():
    from trl.kernels.chunked_logprob import _use_triton
    from trl.models.utils import prepare_deepspeed

    assert _params(_use_triton) == ["device"]
    assert _use_triton(torch.device("cpu")) is False
    assert _params(prepare_deepspeed) == ["model", "accelerator"]


def test_the_fused_lm_head_returns_log_probs_and_top1():
    from trl.trainer.utils import FusedCausalLMOutput, add_fused_lm_head

    fields = {f.name for f in dataclasses.fields(FusedCausalLMOutput)}
    assert {"log_probs", "is_top1"} <= fields
    assert _params(add_fused_lm_head)[0] == "model"
