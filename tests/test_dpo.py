"""DPO + NLL training on the tiny random Llama: saving, the NLL term, resuming a killed run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from polyrise.errors import PolyriseError
from polyrise.models import ResolvedModel, load_model, resolve_model
from polyrise.records import PreferencePair
from polyrise.training.dpo import train_dpo
from polyrise.training.runs import checkpoints_dir
from polyrise.training.settings import DPOSettings

CPU = torch.device("cpu")


def _pairs(n: int) -> list[PreferencePair]:
    return [
        PreferencePair(
            id=f"p{i}",
            lang="de",
            via="de",
            prompt=f"Write one sentence about topic {i}.",
            chosen=f"Hier ist ein kurzer Satz über das Thema {i}.",
            rejected=f"Here is a short sentence about topic {i}.",
        )
        for i in range(n)
    ]


def _settings(**overrides: object) -> DPOSettings:
    return DPOSettings(**{"batch_size": 2, "max_length": 128, "learning_rate": 1e-3, **overrides})


def _weights(resolved: ResolvedModel) -> dict[str, torch.Tensor]:
    return load_model(resolved, device=CPU).state_dict()


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def base(tiny_model_dir) -> ResolvedModel:
    return resolve_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def merged_run(base, tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """An uninterrupted LoRA run saved merged: 4 pairs, batch 2 → 2 steps, a checkpoint after each."""
    out = tmp_path_factory.mktemp("merged") / "model"
    return out, train_dpo(base, _pairs(4), out, _settings(save="merged"))


def test_lora_merged_saves_a_changed_full_model(base, merged_run):
    out, metrics = merged_run
    resolved = resolve_model(str(out))
    assert resolved.base is None
    assert (out / "model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["use_cache"] is True
    before, after = _weights(base), _weights(resolved)
    assert any("q_proj" in k for k in _changed(before, after))
    # LoRA on all-linear leaves the embeddings alone, up to bf16 rounding where CUDA trains in bf16
    key = "model.embed_tokens.weight"
    torch.testing.assert_close(after[key], before[key], rtol=2**-8, atol=0)
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["loss"])
    assert {"rewards/accuracies", "rewards/margins", "train_runtime"} <= metrics.keys()
    assert metrics["step"] == 2
    assert not checkpoints_dir(out).exists()
    assert not any(p.name.endswith(".tmp") for p in out.parent.iterdir())


def test_adapter_save_records_the_base_and_drops_foreign_checkpoints(base, tmp_path):
    out = tmp_path / "model"
    stale = checkpoints_dir(out) / "checkpoint-7"  # left by another run: no run key, no trainer state
    stale.mkdir(parents=True)
    train_dpo(base, _pairs(2), out, _settings(save="adapter"))
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == base.spec
    assert not (out / "config.json").exists()
    resolved = resolve_model(str(out))
    assert resolved.base == base
    assert _changed(_weights(base), _weights(resolved))
    assert not checkpoints_dir(out).exists()


def test_full_finetuning_changes_weights(base, tmp_path):
    out = tmp_path / "model"
    metrics = train_dpo(base, _pairs(1), out, _settings(method="full", batch_size=1))
    assert metrics["step"] == 1
    changed = _changed(_weights(base), _weights(resolve_model(str(out))))
    assert any("embed_tokens" in k for k in changed)


def test_nll_term_is_in_the_loss(base, tokenizer, tmp_path):
    """At step 1 policy == reference: DPO loss = log 2, plus nll_weight x the chosen answer's mean NLL."""
    pair = _pairs(1)
    loss = {}
    logps_chosen = {}
    for w in (0.0, 1.0):
        m = train_dpo(base, pair, tmp_path / f"nll{w}", _settings(batch_size=1, nll_weight=w))
        assert m["step"] == 1
        loss[w], logps_chosen[w] = m["loss"], m["logps/chosen"]
    prompt = [{"role": "user", "content": pair[0].prompt}]
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)
    prompt_ids = prompt_ids["input_ids"]
    full = [*prompt, {"role": "assistant", "content": pair[0].chosen}]
    full_ids = tokenizer.apply_chat_template(full, return_dict=True)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    chosen_nll = -logps_chosen[1.0] / (len(full_ids) - len(prompt_ids))
    assert loss[0.0] == pytest.approx(math.log(2), abs=1e-4)
    assert loss[1.0] == pytest.approx(math.log(2) + chosen_nll, rel=1e-3)
    assert chosen_nll > 1.0


def test_swap_preferences_trains_on_the_opposite_preference(base, tmp_path):
    """The ablation control: at step 1, the swapped run's chosen is the plain run's rejected, and vice versa."""
    plain = train_dpo(base, _pairs(1), tmp_path / "plain", _settings(batch_size=1, nll_weight=0.0))
    swapped = train_dpo(
        base, _pairs(1), tmp_path / "swapped", _settings(batch_size=1, nll_weight=0.0, swap_preferences=True)
    )
    assert swapped["logps/chosen"] == pytest.approx(plain["logps/rejected"], rel=1e-5)
    assert swapped["logps/rejected"] == pytest.approx(plain["logps/chosen"], rel=1e-5)
    assert plain["logps/chosen"] != pytest.approx(plain["logps/rejected"], rel=1e-3)


def test_empty_pairs_is_an_error(base, tmp_path):
    with pytest.raises(PolyriseError, match="no preference pairs"):
        train_dpo(base, [], tmp_path / "model", _settings())
    assert not any(tmp_path.iterdir())


def test_prompts_longer_than_max_length_is_an_error(base, tmp_path):
    with pytest.raises(PolyriseError, match="max_length=16 tokens"):
        train_dpo(base, _pairs(2), tmp_path / "model", _settings(max_length=16))


class _Killed(Exception):
    pass


def test_killed_run_resumes_from_its_checkpoint(base, merged_run, tmp_path, monkeypatch):
    """Kill the merged run's twin after its step-1 checkpoint; the rerun resumes there and ends identical."""
    from trl import DPOTrainer

    save_checkpoint = DPOTrainer._save_checkpoint

    def save_then_die(self, *args, **kwargs):
        save_checkpoint(self, *args, **kwargs)
        raise _Killed

    out = tmp_path / "model"
    monkeypatch.setattr(DPOTrainer, "_save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        train_dpo(base, _pairs(4), out, _settings(save="merged"))
    assert (checkpoints_dir(out) / "checkpoint-1").is_dir()
    assert not out.exists()
    monkeypatch.undo()

    resumed_from = []
    train = DPOTrainer.train

    def spy_train(self, *args, resume_from_checkpoint=None, **kwargs):
        resumed_from.append(resume_from_checkpoint)
        return train(self, *args, resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    monkeypatch.setattr(DPOTrainer, "train", spy_train)
    metrics = train_dpo(base, _pairs(4), out, _settings(save="merged"))
    assert resumed_from == [str(checkpoints_dir(out) / "checkpoint-1")]
    assert metrics["step"] == 2
    # the summary is the whole training's, not the resumed step's alone
    assert metrics["train_loss"] == pytest.approx(merged_run[1]["train_loss"], abs=1e-6) and metrics["resumed"] == 1
    assert not checkpoints_dir(out).exists()
    uninterrupted = _weights(resolve_model(str(merged_run[0])))
    resumed = _weights(resolve_model(str(out)))
    for key, value in uninterrupted.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6)


def test_a_checkpoint_cut_short_by_a_kill_is_never_resumed(tmp_path):
    """A kill while the trainer writes checkpoint-2 leaves it without (or with half) its trainer_state.json, which
    the trainer writes last: the run resumes from checkpoint-1 and the cut one is deleted."""
    from polyrise.training.runs import checkpoint_to_resume

    ckpt = tmp_path / "model.checkpoints"
    checkpoint_to_resume(ckpt, "key")  # the run's first start: its key
    for step, state in ((1, '{"global_step": 1}'), (2, '{"global_st'), (3, None)):
        (ckpt / f"checkpoint-{step}").mkdir()
        (ckpt / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"w")
        if state is not None:
            (ckpt / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert checkpoint_to_resume(ckpt, "key") == str(ckpt / "checkpoint-1")
    assert sorted(p.name for p in ckpt.iterdir() if p.is_dir()) == ["checkpoint-1"]


def test_a_kill_while_the_finished_checkpoints_are_deleted_never_resumes_them(tmp_path, monkeypatch):
    """After the model is saved its checkpoints are deleted file by file; a kill that has deleted checkpoint-2's
    weights but not its trainer_state.json must not leave it to be resumed (transformers would fail on it: "Can't
    find a valid checkpoint"): the next start deletes it and trains afresh."""
    import shutil

    from polyrise.training import runs

    ckpt = tmp_path / "model.checkpoints"
    runs.checkpoint_to_resume(ckpt, "key")
    (ckpt / "checkpoint-2").mkdir()
    (ckpt / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"w")
    (ckpt / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):
        (ckpt / "checkpoint-2" / "adapter_model.safetensors").unlink()
        raise KeyboardInterrupt  # the kill

    monkeypatch.setattr(runs.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        runs.drop_checkpoints(ckpt)
    monkeypatch.setattr(runs.shutil, "rmtree", rmtree)
    assert (ckpt / "checkpoint-2" / "trainer_state.json").is_file()
    assert runs.checkpoint_to_resume(ckpt, "key") is None
    assert not (ckpt / "checkpoint-2").exists()


def _unpacked_logps(model, prompt: list[int], answer: list[int]) -> float:
    """log p(answer | prompt) from a plain forward of the unpacked row `prompt + answer`."""
    ids = torch.tensor([prompt + answer])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
    return logits.log_softmax(-1).gather(1, torch.tensor(answer)[:, None]).sum().item()


@pytest.mark.parametrize(("attn", "fused"), [("sdpa", False), ("eager", False), ("sdpa", True)])
def test_packed_rows_give_each_answer_its_unpacked_log_prob(tiny_model_dir, attn, fused, monkeypatch):
    """prompt | chosen | last prompt token | rejected, with the block mask: each answer's log-prob equals that of
    its own unpacked row, for prompts and answers of different lengths, one-token answers, padding, truncation;
    through the model's head on the kept columns, and through TRL's fused head (taken on Triton devices)."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from polyrise.training import _trl_compat
    from polyrise.training.dpo import pack, packed_logps

    monkeypatch.setattr(_trl_compat, "_use_triton", lambda device: fused)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn).eval()
    add_fused_lm_head(model)
    g = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(3, 500, (n,), generator=g).tolist()

    examples = [
        {"prompt_ids": ids(7), "chosen_ids": ids(5), "rejected_ids": ids(9)},
        {"prompt_ids": ids(3), "chosen_ids": ids(1), "rejected_ids": ids(1)},
        {"prompt_ids": ids(12), "chosen_ids": ids(20), "rejected_ids": ids(2)},  # answers cut at max_length 24
    ]
    with torch.no_grad():
        chosen, rejected = packed_logps(model, pack(examples, pad_token_id=0, max_length=24), attn).answer_logps()
        for i, ex in enumerate(examples):
            room = 24 - len(ex["prompt_ids"])
            want_c = _unpacked_logps(model, ex["prompt_ids"], ex["chosen_ids"][:room])
            want_r = _unpacked_logps(model, ex["prompt_ids"], ex["rejected_ids"][:room])
            assert chosen[i].item() == pytest.approx(want_c, abs=1e-4)
            assert rejected[i].item() == pytest.approx(want_r, abs=1e-4)
    assert chosen[0].item() != pytest.approx(rejected[0].item(), abs=1e-2)


def _trl_default_losses(base: ResolvedModel, pairs: list[PreferencePair], settings: DPOSettings, tmp: Path) -> list:
    """Per-step losses of TRL's own `DPOTrainer` (reference forward every step, unpacked rows), same settings."""
    from trl import DPOTrainer

    from polyrise.training.dpo import _preference_dataset, dpo_config
    from polyrise.training.runs import load_for_training

    tokenizer, model, peft_config = load_for_training(base, settings, "auto", None, False)
    args = dpo_config(settings, tmp, 0, precompute_ref_log_probs=False, save_strategy="no")
    ref = None if peft_config else load_model(base, dtype="float32")
    trainer = DPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=_preference_dataset(pairs),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_every_step_loss_equals_trl_default_path(base, tmp_path, method):
    """The packed, cached-reference path trains the same model: per-step losses within 1e-4 of TRL's default
    `DPOTrainer` over 3 steps (pairs of different lengths, so padding and truncation differ between the paths)."""
    pairs = [
        p.model_copy(update={"chosen": p.chosen * (1 + i % 3), "rejected": p.rejected * (1 + (i + 1) % 2)})
        for i, p in enumerate(_pairs(6))
    ]
    settings = _settings(method=method, max_length=64, nll_weight=0.5)
    out = tmp_path / "model"
    train_dpo(base, pairs, out, settings, reference_cache=tmp_path / "cache.sqlite")
    ours = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    ours = [row["loss"] for row in ours if "loss" in row]
    theirs = _trl_default_losses(base, pairs, settings, tmp_path / "trl")
    assert len(ours) == len(theirs) == 3
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-4
    assert theirs[0] != pytest.approx(theirs[-1], abs=1e-3)  # the steps differ: a constant would not pass


def test_reference_log_probs_are_read_from_the_cache_under_their_model_only(base, tmp_path):
    """The second run reads every reference log-prob from the cache (a planted value proves it), and a cache
    entry made under another reference model's key is never used."""
    from polyrise.generation.cache import GenerationCache

    cache_file = tmp_path / "cache.sqlite"
    train_dpo(base, _pairs(2), tmp_path / "first", _settings(), reference_cache=cache_file)
    cache = GenerationCache(cache_file)
    keys = list(cache.get_json(k for (k,) in cache._db.execute("SELECT key FROM outputs")))
    assert len(keys) == 4  # (prompt, chosen) and (prompt, rejected) of both pairs
    cache.put_json({k: -1234.5 for k in keys})
    cache.close()
    seen: list[float] = []
    from polyrise.training import dpo

    original = dpo.PackedDPOTrainer.reference_logps

    def spy(self, dataset, batch_size):
        done = original(self, dataset, batch_size)
        seen.extend([*done["ref_chosen_logps"], *done["ref_rejected_logps"]])
        return done

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dpo.PackedDPOTrainer, "reference_logps", spy)
        train_dpo(base, _pairs(2), tmp_path / "beta", _settings(beta=0.5), reference_cache=cache_file)
        assert seen == [-1234.5] * 4
        seen.clear()
        copy = shutil.copytree(base.path, tmp_path / "copy")
        (copy / "README.md").write_text("same weights, another model dir: another fingerprint")
        other = resolve_model(str(copy))
        assert other.fingerprint() != base.fingerprint()
        train_dpo(other, _pairs(2), tmp_path / "other", _settings(), reference_cache=cache_file)
        assert len(seen) == 4 and -1234.5 not in seen


def test_a_training_that_diverges_stops_at_that_step_and_saves_nothing(base, tmp_path, monkeypatch):
    """A NaN loss from step 2 on (as an absurd learning rate gives): one error naming the step; no model, no
    checkpoint a rerun would resume from."""
    from polyrise.training.dpo import PackedDPOTrainer

    computed = []
    original = PackedDPOTrainer.compute_loss

    def nan_from_step_2(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)
        computed.append(self.state.global_step + 1)
        return loss * math.nan if self.state.global_step >= 1 else loss

    monkeypatch.setattr(PackedDPOTrainer, "compute_loss", nan_from_step_2)
    out = tmp_path / "model"
    with pytest.raises(PolyriseError, match=r"^the training diverged: loss nan at step 2/4; no model was saved"):
        train_dpo(base, _pairs(4), out, _settings(batch_size=1))
    assert computed == [1, 2]  # stopped at the step that diverged
    assert not out.exists() and not checkpoints_dir(out).exists()
