"""Question alignment: the data builder, the completion-only SFT, and `polyrise align` end to end on a tiny model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from polyrise.cli import app
from polyrise.config import load_config
from polyrise.errors import PolyriseError
from polyrise.io import read_jsonl
from polyrise.methods.question_alignment import AlignmentSettings, build_question_pairs
from polyrise.models import load_model, resolve_model
from polyrise.records import Prompt, QuestionPair
from polyrise.training.settings import SFTSettings
from polyrise.training.sft import train_sft


def _p(pid: str, lang: str, text: str) -> Prompt:
    return Prompt(id=pid, lang=lang, instruction=text)


def test_pairs_join_on_id_and_count_every_drop():
    prompts = [
        _p("a", "en", "How old is Tom?"),
        _p("a", "zh", "汤姆几岁"),
        _p("a", "de", "Wie alt ist Tom?"),
        _p("b", "en", "Where is the cat?"),
        _p("b", "zh", "猫在哪里"),  # no German row
        _p("c", "zh", "为什么"),  # no English row
        _p("d", "en", "OK?"),
        _p("d", "zh", "OK?"),  # untranslated
        _p("e", "en", "What is 2+2?"),  # its German translation failed
    ]
    pairs, stats = build_question_pairs(
        prompts, [("zh", "en"), ("de", "en"), ("en", "zh")], "Q: {question}", failed={("e", "de")}
    )
    assert [(p.id, p.lang, p.target) for p in pairs] == [
        ("a", "zh", "en"),
        ("b", "zh", "en"),
        ("a", "de", "en"),
        ("a", "en", "zh"),
        ("b", "en", "zh"),
    ]
    assert pairs[0].prompt == "Q: 汤姆几岁" and pairs[0].completion == "How old is Tom?"
    assert stats["zh-en"] == {
        "kept": 2,
        # c has no English row, d is untranslated, e has no Chinese row
        "dropped": {"missing_question": 1, "missing_translation": 1, "translation_failure": 0, "identical": 1},
    }
    assert stats["de-en"]["dropped"] == {
        "missing_question": 3,  # b, c and d have no German row
        "missing_translation": 0,
        "translation_failure": 1,  # e
        "identical": 0,
    }
    assert stats["en-zh"]["kept"] == 2 and stats["en-zh"]["dropped"]["missing_question"] == 1  # c


def test_alignment_settings_directions_and_errors(tmp_path):
    align = AlignmentSettings(train=["zh", "en-de", "zh"])
    assert align.directions("en") == [("zh", "en"), ("en", "de")]
    assert align.trained_languages("en") == ["zh", "en"]

    def config(**extra) -> Path:
        path = tmp_path / "c.yaml"
        base = {"method": "question-alignment", "languages": ["zh", "de"], "alignment": {"train": ["zh"]}}
        path.write_text(yaml.safe_dump({**base, **extra}))
        return path

    assert load_config(config()).alignment.directions("en") == [("zh", "en")]
    for extra, message in [
        ({"alignment": {"train": ["xx"]}}, "unknown language"),
        ({"alignment": {"train": ["ja"]}}, "'ja', which is not source_lang or in languages"),
        ({"alignment": {"train": ["zh-en-de"]}}, "not a language (zh) or a direction"),
        ({"alignment": {"train": ["zh"], "template": "no placeholder"}}, "must contain {question}"),
        ({"alignment": None}, "needs an `alignment` section"),
        ({"iterations": 2}, "iterations must be 1"),
    ]:
        with pytest.raises(PolyriseError, match=re.escape(message)):
            load_config(config(**extra))


def _question_pairs() -> list[QuestionPair]:
    rows = [("汤姆几岁", "How old is Tom?"), ("猫在哪里", "Where is the cat?"), ("今天星期几", "What day is it?")]
    return [
        QuestionPair(id=str(i), lang="zh", target="en", prompt=q, completion=a) for i, (q, a) in enumerate(rows * 2)
    ]


def test_sft_trains_on_the_completion_only(tiny_model_dir, tokenizer, tmp_path, monkeypatch):
    from trl import SFTTrainer

    seen: list[dict[str, torch.Tensor]] = []
    original = SFTTrainer.compute_loss

    def spy(self, model, inputs, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "compute_loss", spy)
    pairs = _question_pairs()
    out = tmp_path / "aligned"
    settings = SFTSettings(batch_size=2, max_length=64, learning_rate=1e-3)
    metrics = train_sft(resolve_model(str(tiny_model_dir)), pairs, out, settings)
    assert metrics["train_loss"] > 0 and len(seen) == 3  # 6 examples / batch 2, one epoch

    completions = {p.completion for p in pairs}
    prompts = {p.prompt for p in pairs}
    for batch in seen:
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
            trained = labels != -100
            assert trained.any() and not trained[mask == 0].any()
            first = int(trained.nonzero()[0])
            assert (labels[first:][mask[first:] == 1] != -100).all()  # one trained span: the completion
            prompt_text = tokenizer.decode(ids[:first][mask[:first] == 1])
            answer_text = tokenizer.decode(labels[trained])
            assert any(p in prompt_text for p in prompts) and "<|im_start|>assistant" in prompt_text
            assert any(answer_text.startswith(c) for c in completions)  # + the end-of-turn token
            assert not any(p in answer_text for p in prompts)

    base = load_model(resolve_model(str(tiny_model_dir)))
    tuned = load_model(resolve_model(str(out)))
    changed = [n for n, p in tuned.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all("proj" in n for n in changed)  # merged LoRA on the linear layers


def test_train_command_trains_with_the_configs_method(tiny_model_dir, tmp_path):
    """`polyrise train` with a question-alignment config runs SFT on question pairs (not DPO on preference pairs)."""
    from typer.testing import CliRunner

    from polyrise.cli import app
    from polyrise.io import write_jsonl

    data = tmp_path / "question_pairs.jsonl"
    write_jsonl(data, _question_pairs())
    config = tmp_path / "align.yaml"
    training = {"batch_size": 2, "max_length": 64, "learning_rate": 1e-3}
    align = {"method": "question-alignment", "languages": ["zh"], "alignment": {"train": ["zh"]}, "training": training}
    config.write_text(yaml.safe_dump(align))
    args = ["train", str(data), "--model", str(tiny_model_dir), "--config", str(config), "-o", str(tmp_path / "m1")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mean_token_accuracy" in result.output and (tmp_path / "m1" / "config.json").is_file()


def test_sft_refuses_empty_data(tiny_model_dir, tmp_path):
    with pytest.raises(PolyriseError, match="no question pairs"):
        train_sft(resolve_model(str(tiny_model_dir)), [], tmp_path / "m", SFTSettings())


def _align_config(tmp_path: Path, model_dir: Path, questions: str, **extra) -> Path:
    cfg = {
        "name": "align",
        "output_dir": str(tmp_path / "runs"),
        "model": {"spec": str(model_dir)},
        "languages": ["zh", "de", "fr"],
        "alignment": {"train": ["zh"], "questions": {"source": questions}},
        "generation": {
            "policy": {"batch_size": 4},
            "answer": {"max_new_tokens": 6},
            "translate": {"max_new_tokens": 8},
        },
        "training": {"batch_size": 2, "max_length": 64, "learning_rate": 1e-3},
        "heldout": {"prompts": {"source": "builtin:heldout", "limit": 2}, "max_new_tokens": 6},
        "evaluation": [{"task": "translation", "source": questions, "langs": ["en", "zh", "de"], "max_new_tokens": 8}],
        "stage_processes": False,
        **extra,
    }
    path = tmp_path / "align.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


def _aligned_files(tmp_path: Path) -> str:
    rows = {
        "en": ["How old is Tom?", "Where is the cat?", "What day is it?", "Who wrote this?"],
        "zh": ["汤姆几岁", "猫在哪里", "今天星期几"],  # q3 missing in zh
        "de": ["Wie alt ist Tom?", "Wo ist die Katze?", "Welcher Tag ist heute?", "Wer hat das geschrieben?"],
    }
    for lang, texts in rows.items():
        (tmp_path / f"q_{lang}.jsonl").write_text(
            "".join(
                json.dumps({"id": f"q{i}", "instruction": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)
            )
        )
    return str(tmp_path / "q_{lang}.jsonl")


def test_align_command_end_to_end_and_report_marks_trained_languages(tmp_path, tiny_model_dir):
    config = _align_config(tmp_path, tiny_model_dir, _aligned_files(tmp_path))
    result = CliRunner().invoke(app, ["align", str(config)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "align"
    pairs = read_jsonl(run / "iter_0" / "question_pairs.jsonl", QuestionPair)
    assert [(p.id, p.lang, p.target) for p in pairs] == [("q0", "zh", "en"), ("q1", "zh", "en"), ("q2", "zh", "en")]
    stats = json.loads((run / "iter_0" / "question_pairs_stats.json").read_text())
    assert stats["zh-en"]["dropped"]["missing_question"] == 1
    assert (run / "iter_0" / "model" / "model.safetensors").is_file()

    scores = json.loads((run / "iter_0" / "eval" / "scores.json").read_text())
    assert set(scores["translation"]) == {"M0", "M1"}
    assert {"en-zh", "zh-en", "en-de", "de-en"} <= set(scores["translation"]["M1"])
    assert set(scores["heldout"]) == {"M0", "M1"}
    assert yaml.safe_load((run / "config.yaml").read_text())["method"] == "question-alignment"
    manifest = json.loads((run / "manifest.json").read_text())["stages"]
    assert {"iter_0/questions", "iter_0/train", "iter_0/eval_M0", "iter_0/eval_M1"} <= set(manifest)
    assert "iter_0/pairs" not in manifest

    rerun = CliRunner().invoke(app, ["align", str(config)])
    assert rerun.exit_code == 0 and rerun.output.count("up to date, skipped") == len(manifest)

    assert CliRunner().invoke(app, ["report", str(run)]).exit_code == 0
    report = (run / "report.md").read_text()
    assert "languages marked * (zh) were in training" in report
    assert "| zh-en * |" in report and "| de-en |" in report and "| de |" in report  # zh trained, de unseen


def test_align_self_translates_english_questions(tmp_path, tiny_model_dir):
    questions = tmp_path / "en.jsonl"
    questions.write_text("".join(json.dumps({"id": f"q{i}", "instruction": f"Question {i}?"}) + "\n" for i in range(3)))
    config = _align_config(
        tmp_path,
        tiny_model_dir,
        str(questions),
        evaluation=[],
        heldout=None,
        # sampled: a random model's greedy output repeats one token; the data stage must cope with failures
        generation={"policy": {"batch_size": 4}, "translate": {"max_new_tokens": 8, "temperature": 1.0}},
    )
    cfg = load_config(config, {"method": "question-alignment"})
    from polyrise.runner import run_pipeline

    try:
        run_pipeline(cfg)
    except PolyriseError as e:  # every translation of a random model may fail: then training has nothing
        assert "no question pairs" in str(e)
    it = cfg.run_dir / "iter_0"
    attempts = [json.loads(line) for line in (it / "prompt_translations.jsonl").read_text().splitlines()]
    assert sorted((a["id"], a["lang"]) for a in attempts) == [(f"q{i}", "zh") for i in range(3)]
    stats = json.loads((it / "question_pairs_stats.json").read_text())["zh-en"]
    failures = sum(a["output"] is None for a in attempts)
    assert stats["dropped"]["translation_failure"] == failures
    assert stats["kept"] + sum(stats["dropped"].values()) == 3
