"""Cross-lingual GRPO: each reward by hand, the settings' checks, the study's GRPO variants, a killed training that
resumes from its checkpoint (and counts its completions' tokens), and one iteration end to end on a small sandbox
(per-step reward logs, in the run and in TensorBoard; a rerun that skips every stage)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from rich.console import Console

from polyrise.config import RunConfig, load_config
from polyrise.evaluation.math import extract_answer
from polyrise.io import read_jsonl
from polyrise.langid import LangIdSettings
from polyrise.methods.cross_lingual_grpo import (
    GRPOPrompt,
    GRPOSettings,
    english_agreement,
    gold,
    language,
    reward_functions,
)
from polyrise.methods.wrong_language_dpo import read_vocabularies
from polyrise.records import Response
from polyrise.runner import Runner
from polyrise.sandbox.study import study_config, vocabulary_spec, write_vocabularies
from polyrise.training.settings import TrainingSettings

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sandbox.yaml"


def _said(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]  # a conversational completion, as TRL passes it


def test_language_reward_by_hand():
    completions = [_said("3 + 4 = 7. Ba ko 7 mi."), _said("Ba has 7 apples."), _said("7."), "Ko mi."]
    words = ["ba", "ko", "mi"]
    rewards = language(completions, ["qaa"] * 4, [words] * 4, [["en"]] * 4, langid=LangIdSettings(), trainer_state=None)
    assert rewards == [1.0, pytest.approx(1 / 3), None, 1.0]  # None: no word, not applicable
    english = "The weather is lovely today and we are going to the park together."
    spanish = "El tiempo es muy agradable hoy y vamos a ir juntos al parque."
    by_detector = language(
        [_said(english), _said(spanish)], ["es", "es"], [None, None], [["en"], ["en"]], langid=LangIdSettings()
    )
    assert by_detector == [0.0, 1.0]


def test_agreement_and_gold_rewards_by_hand():
    completions = [_said("3 + 4 = 7. Ba ko 7 mi."), _said("Ba ko 8."), _said("Ba ko."), _said("12.0")]
    langs = ["qaa"] * 4
    # the final number against M(t)'s English answer's number; None where the English answer had none
    assert english_agreement(completions, langs, ["7", "7", "7", None]) == [1.0, 0.0, 0.0, None]
    assert gold(completions, langs, ["7", "8", None, "12"]) == [1.0, 1.0, None, 1.0]


def test_completion_tokens_by_hand():
    """Eight completions a round: six stopped (5 tokens, then the stop token TRL counts) and two cut at 6 tokens;
    a round every second step when a round is two global batches."""
    from types import SimpleNamespace

    from polyrise.methods.cross_lingual_grpo import completion_tokens

    lengths = [6, 6, 6, 6, 6, 6, 6, 6]  # stop token included for the six stopped ones
    row = {"completions/mean_length": sum(lengths) / 8, "completions/clipped_ratio": 2 / 8}
    args = SimpleNamespace(
        per_device_train_batch_size=4, gradient_accumulation_steps=2, world_size=1, generation_batch_size=8
    )
    assert completion_tokens([row, row, {"train_runtime": 1.0}], args) == 2 * (6 * 5 + 2 * 6)
    every_other = SimpleNamespace(
        per_device_train_batch_size=2, gradient_accumulation_steps=1, world_size=2, generation_batch_size=8
    )
    assert completion_tokens([row, {"loss": 0.1}, row, {"loss": 0.2}], every_other) == 2 * (6 * 5 + 2 * 6)


def test_settings_checks_and_reward_order():
    assert [f.func.__name__ if hasattr(f, "func") else f.__name__ for f in reward_functions(GRPOSettings())] == [
        "language",
        "english_agreement",
    ]
    oracle = GRPOSettings(rewards={"gold": 2.0, "language": 0.5, "english_agreement": 0.0})
    assert list(oracle.weights.items()) == [("language", 0.5), ("gold", 2.0)]  # zero weights are not computed
    for bad, message in [
        ({"rewards": {"language": 0.0}}, "at least one reward"),
        ({"rewards": {"fluency": 1.0}}, "rewards.fluency"),
        ({"reference": "m", "beta": 0.0}, "only used with beta > 0 and method: full"),
        ({"reference": "m", "method": "lora"}, "only used with beta > 0 and method: full"),
        ({"batch_size": 6, "num_generations": 4}, "6 completions per round"),
        ({"generations_per_step": 10, "num_generations": 4}, "10 completions per round"),
        ({"vocabulary": "words.txt"}, "needs `\\{lang\\}`"),
        ({"batch_size": 4, "num_generations": 2, "generations_per_step": 6}, "not a multiple of the global batch"),
    ]:
        with pytest.raises(ValidationError, match=message):
            GRPOSettings.model_validate(bad)


def test_study_variants_keep_only_the_grpo_trainers_keys(tmp_path):
    base = load_config(EXAMPLE)
    box = tmp_path / "box"
    (box / "model").mkdir(parents=True)
    (box / "sandbox.json").write_text(json.dumps({"languages": ["en", "qaa", "qab"]}))
    label_free = study_config(base, box, 2, "cross-lingual-grpo", tmp_path, 3)
    oracle = study_config(base, box, 2, "grpo-gold", tmp_path, 3)
    shared = set(TrainingSettings.model_fields)
    for cfg in (label_free, oracle):
        assert cfg.method == "cross-lingual-grpo" and isinstance(cfg.training, GRPOSettings)
        assert not hasattr(cfg, "filters")
        # the base's shared trainer settings, not its DPO ones: beta is GRPO's KL weight, not DPO's 0.1
        assert cfg.training.model_dump(include=shared) == base.training.model_dump(include=shared)
        assert cfg.training.beta == 0.04 and base.training.beta == 0.1
        assert cfg.training.max_completion_length == base.generation.answer.max_new_tokens
        assert cfg.training.vocabulary == vocabulary_spec(tmp_path)
        assert "nll_weight" not in cfg.model_dump()["training"]
    assert label_free.training.weights == {"language": 1.0, "english_agreement": 1.0}
    assert oracle.training.weights == {"language": 1.0, "gold": 1.0}
    wrong = study_config(base, box, 2, "wrong-language-dpo", tmp_path, 3)
    assert wrong.training == base.training and wrong.wrong_language.vocabulary == vocabulary_spec(tmp_path)


def test_one_iteration_end_to_end_on_a_small_sandbox(small_sandbox, tmp_path):
    box, prompts = small_sandbox
    write_vocabularies(tmp_path)
    data = study_config(load_config(EXAMPLE), box, 0, "cross-lingual-grpo", tmp_path, 1).model_dump(mode="json")
    data["prompts"]["source"] = str(prompts)
    data["training"] |= {"max_steps": 4, "batch_size": 8}
    data["tracking"] = {"backend": "tensorboard"}
    config = RunConfig.model_validate(data)
    runner = Runner(config, Console(file=io.StringIO()))
    runner.run()
    it = runner.layout.iter_dir(0)
    manifest = json.loads((runner.run_dir / "manifest.json").read_text())["stages"]
    assert list(manifest) == [
        "iter_0/eval_M0",
        "iter_0/prompts",
        "iter_0/english",
        "iter_0/grpo_prompts",
        "iter_0/train",
        "iter_0/eval_M1",
    ]
    words = read_vocabularies(vocabulary_spec(tmp_path), ["qaa", "qab"])
    english = {r.id: r.output for r in read_jsonl(it / "english_answers.jsonl", Response)}
    rows = read_jsonl(it / "grpo_prompts.jsonl", GRPOPrompt)
    assert {r.lang for r in rows} == {"qaa", "qab"} and len(rows) == 24
    golds = {json.loads(line)["id"]: json.loads(line)["answer"] for line in (box / "prompts" / "train.jsonl").open()}
    for r in rows:
        assert r.gold == golds[r.id] and set(r.others) == {"en", "qaa", "qab"} - {r.lang}
        assert r.vocabulary == sorted(words[r.lang])  # the language reward's word list travels with the prompt
        assert r.english_number == extract_answer(english[r.id], "en")
    stats = json.loads((it / "grpo_stats.json").read_text())
    for lang in ("qaa", "qab"):  # how often the label-free target equals the oracle's, by hand
        mine = [r for r in rows if r.lang == lang and r.english_number is not None]
        assert stats[lang]["english_checked"] == len(mine)
        assert stats[lang]["english_right"] == sum(float(r.english_number) == float(r.gold) for r in mine)
    log = [json.loads(line) for line in (it / "model" / "training_log.jsonl").open()]
    steps = [row for row in log if "loss" in row]
    assert len(steps) == 4  # each step logs each weighted reward
    assert all({"rewards/language/mean", "rewards/english_agreement/mean", "kl"} <= row.keys() for row in steps)
    assert "rewards/gold/mean" not in steps[0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runner.run_dir / "tensorboard" / f"{config.name}-iter_0-train")).Reload()
    for name in ("language", "english_agreement"):  # the tracker has each reward of every step
        logged = [(e.step, e.value) for e in events.Scalars(f"train/rewards/{name}/mean")]
        assert logged == [(row["step"], pytest.approx(row[f"rewards/{name}/mean"], rel=1e-6)) for row in steps]
    assert manifest["iter_0/train"]["counts"]["examples"] == 24
    # its cost: the tokens of M0's English answers (those of the eval stages are not the method's) and completions
    english_tokens = runner.generator(str(box / "model")).engine.tokenizer(
        list(english.values()), add_special_tokens=False
    )["input_ids"]
    assert manifest["iter_0/english"]["counts"]["generated_tokens"] == sum(map(len, english_tokens))
    assert manifest["iter_0/train"]["counts"]["generated_tokens"] > 0
    # a rerun finds every stage up to date
    again = Runner(config, Console(file=io.StringIO()))
    again.run()
    assert json.loads((runner.run_dir / "manifest.json").read_text())["stages"] == manifest


class _Killed(Exception):
    pass


def test_a_killed_grpo_training_resumes_from_its_checkpoint_and_counts_every_token(
    tiny_model_dir, tmp_path, monkeypatch
):
    """Kill GRPO after its step-1 checkpoint; the rerun resumes there and ends as the uninterrupted run did: the same
    weights, the same per-step log, and the same count of generated tokens, which equals the completions' tokens the
    reward functions received (stop tokens not counted)."""
    import torch
    from trl import GRPOTrainer

    from polyrise.methods import cross_lingual_grpo
    from polyrise.models import load_model, load_tokenizer, resolve_model
    from polyrise.settings import ModelSettings
    from polyrise.training.runs import TRAINING_LOG, checkpoints_dir

    base = resolve_model(str(tiny_model_dir))
    tokenizer = load_tokenizer(base)
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    seen: list[int] = []

    def counting_gold(completions, completion_ids, **kwargs):
        seen.append(sum(len(ids) - (ids[-1] in stops) for ids in completion_ids))
        return gold(completions, **kwargs)

    counting_gold.__name__ = "gold"
    monkeypatch.setattr(cross_lingual_grpo, "gold", counting_gold)
    rows = [
        GRPOPrompt(id=f"p{i}", lang="de", prompt=f"Was ist {i} plus {i}?", others=["en"], gold=str(2 * i))
        for i in range(4)
    ]
    settings = GRPOSettings(
        rewards={"gold": 1.0}, batch_size=4, num_generations=2, max_steps=3, max_completion_length=6, learning_rate=1e-2
    )

    def train(out: Path) -> dict[str, float]:
        return cross_lingual_grpo.train_grpo(
            base, rows, out, settings, ModelSettings(spec=str(tiny_model_dir)), seed=0, cache=None, report={}
        )

    plain = train(tmp_path / "plain")
    assert plain["generated_tokens"] == sum(seen) > 0
    seen.clear()

    save_checkpoint = GRPOTrainer._save_checkpoint

    def save_then_die(self, *args, **kwargs):
        save_checkpoint(self, *args, **kwargs)
        raise _Killed

    out = tmp_path / "model"
    with monkeypatch.context() as patch:
        patch.setattr(GRPOTrainer, "_save_checkpoint", save_then_die)
        with pytest.raises(_Killed):
            train(out)
    assert (checkpoints_dir(out) / "checkpoint-1").is_dir() and not out.exists()
    resumed_from = []
    real_train = GRPOTrainer.train

    def spy_train(self, *args, resume_from_checkpoint=None, **kwargs):
        resumed_from.append(resume_from_checkpoint)
        return real_train(self, *args, resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "train", spy_train)
    seen.clear()
    resumed = train(out)
    assert resumed_from == [str(checkpoints_dir(out) / "checkpoint-1")]
    assert resumed["step"] == 3 and resumed["resumed"] == 1 and not checkpoints_dir(out).exists()
    assert len(seen) == 2  # steps 2 and 3 sampled again, step 1 not

    def steps(model: Path) -> list[dict[str, float]]:
        return [
            {k: v for k, v in json.loads(line).items() if k != "step_time"} for line in (model / TRAINING_LOG).open()
        ][:3]

    assert steps(out) == steps(tmp_path / "plain")
    assert resumed["generated_tokens"] == plain["generated_tokens"]  # the whole training's completions, not step 2-3's
    cpu = torch.device("cpu")
    expected = load_model(resolve_model(str(tmp_path / "plain")), device=cpu).state_dict()
    for key, value in load_model(resolve_model(str(out)), device=cpu).state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6)
