"""Sandbox studies: variant configs over a seed's sandbox, and the mean ± sd summary over seeds."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path

import pytest

from polyrise.config import load_config
from polyrise.errors import PolyriseError
from polyrise.sandbox.study import NO_FILTERS, run_study, study_config, summarize_study

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sandbox.yaml"


def _fake_sandbox(path: Path) -> Path:
    (path / "model").mkdir(parents=True)
    (path / "model" / "config.json").write_text("{}")
    (path / "sandbox.json").write_text(json.dumps({"languages": ["en", "qaa", "qab"]}))
    return path


def test_variant_configs_point_at_the_seed_sandbox_and_change_only_their_settings(tmp_path):
    base = load_config(EXAMPLE)
    box = _fake_sandbox(tmp_path / "box")
    plain = study_config(base, box, 4, "rewarding", tmp_path / "study", 2)
    assert (plain.name, plain.seed, plain.iterations) == ("seed4-rewarding", 4, 2)
    assert plain.run_dir == tmp_path / "study" / "runs" / "seed4-rewarding"
    assert plain.model.spec == str(box / "model")
    assert plain.prompts.source == str(box / "prompts" / "train.jsonl")
    [task] = plain.evaluation
    assert (task.task, task.source, task.langs) == ("mgsm", str(box / "eval" / "{lang}.jsonl"), ["en", "qaa", "qab"])
    assert plain.training == base.training and plain.filters == base.filters

    swapped = study_config(base, box, 4, "swapped", tmp_path / "study", 2)
    assert swapped.training.swap_preferences and not plain.training.swap_preferences
    assert swapped.training.model_copy(update={"swap_preferences": False}) == base.training
    assert study_config(base, box, 4, "nll0", tmp_path, 1).training.nll_weight == 0.0
    assert base.training.nll_weight == 1.0  # so `rewarding` is the NLL-1 arm
    unfiltered = study_config(base, box, 4, "no-filters", tmp_path, 1).filters
    assert unfiltered.model_dump() == {**base.filters.model_dump(), **NO_FILTERS}
    with pytest.raises(PolyriseError, match="unknown study variant 'bogus'"):
        study_config(base, box, 4, "bogus", tmp_path, 1)


def test_icr_variants_run_the_aligned_policy_against_the_sandbox_model(tmp_path):
    base = load_config(EXAMPLE)
    box = _fake_sandbox(tmp_path / "box")
    icr = study_config(base, box, 1, "icr", tmp_path / "study", 3)
    assert icr.method == "implicit-cross-lingual" and icr.name == "seed1-icr"
    assert icr.model.spec == str(box / "aligned") and icr.implicit_reward.reference == str(box / "model")
    assert icr.implicit_reward.sampling.max_new_tokens == base.generation.answer.max_new_tokens == 48
    assert (icr.implicit_reward.sampling.temperature, icr.implicit_reward.samples) == (0.9, 10)
    assert icr.training == base.training and icr.implicit_reward.length_control
    assert icr.implicit_reward.variant == "cross-lingual"
    plain = icr.implicit_reward.model_dump()
    no_lc = study_config(base, box, 1, "icr-no-length-control", tmp_path, 3).implicit_reward
    assert no_lc.model_dump() == {**plain, "length_control": False}
    native = study_config(base, box, 1, "icr-native-instruction", tmp_path, 3).implicit_reward
    assert native.model_dump() == {**plain, "variant": "multilingual"}
    assert getattr(study_config(base, box, 1, "rewarding", tmp_path, 3), "implicit_reward", None) is None
    assert icr.implicit_reward.reference_after_first == "fixed" and icr.implicit_reward.pairing == "reward"
    previous = study_config(base, box, 1, "icr-previous", tmp_path, 3).implicit_reward
    assert previous.model_dump() == {**plain, "reference_after_first": "previous"}
    random_pairs = study_config(base, box, 1, "icr-random", tmp_path, 3)
    assert random_pairs.implicit_reward.model_dump() == {**plain, "pairing": "random"}
    assert random_pairs.model.spec == icr.model.spec and random_pairs.training == icr.training


def test_study_builds_at_the_alignment_strength_asked_and_refuses_another(tmp_path, monkeypatch):
    built = []

    def fake_build(out, seed, *, align, console):
        built.append((seed, align.pairs))
        _fake_sandbox(out)
        (out / "sandbox.json").write_text(json.dumps({"languages": ["en"], "aligned": asdict(align)}))

    monkeypatch.setattr("polyrise.sandbox.study.build_sandbox", fake_build)
    monkeypatch.setattr("polyrise.runner.run_pipeline", lambda cfg, console: None)
    monkeypatch.setattr("polyrise.sandbox.study.summarize_study", lambda out: {})
    run_study(tmp_path, EXAMPLE, [0, 1], ["icr"], 1, align_pairs=800)
    assert built == [(0, 800), (1, 800)]
    run_study(tmp_path, EXAMPLE, [0, 1], ["icr"], 1, align_pairs=800)  # reused: nothing built again
    assert len(built) == 2
    with pytest.raises(PolyriseError, match=r"sandbox-seed0/sandbox.json: its English alignment is .*'pairs': 800"):
        run_study(tmp_path, EXAMPLE, [0, 2], ["icr"], 1)  # the default strength: another study dir
    assert len(built) == 2 and not (tmp_path / "sandbox-seed2").exists()


def test_unknown_variant_fails_before_any_sandbox_is_built(tmp_path):
    with pytest.raises(PolyriseError, match="unknown study variant 'nll2'"):
        run_study(tmp_path, EXAMPLE, [0], ["rewarding", "nll2"], 1)
    assert not list(tmp_path.iterdir())


def _scores(run: Path, t: int, by_label: dict[str, dict[str, float]]) -> None:
    path = run / f"iter_{t}" / "eval" / "scores.json"
    path.parent.mkdir(parents=True)
    rows = {
        label: {lang: {"accuracy": acc, "n": 200} for lang, acc in accs.items()} for label, accs in by_label.items()
    }
    path.write_text(json.dumps({"mgsm": rows, "translation": {"M0": {"en-qaa": {"chrf++": 1.0}}}}))


def test_summary_is_mean_and_sample_sd_over_seeds(tmp_path):
    runs = tmp_path / "runs"
    _scores(runs / "seed0-rewarding", 0, {"M0": {"en": 1.0, "qaa": 0.6}, "M1": {"en": 1.0, "qaa": 0.7}})
    _scores(runs / "seed1-rewarding", 0, {"M0": {"en": 0.9, "qaa": 0.4}, "M1": {"en": 1.0, "qaa": 0.6}})
    _scores(runs / "seed1-rewarding", 1, {"M2": {"en": 1.0, "qaa": 0.8}})
    _scores(runs / "seed0-no-filters", 0, {"M0": {"en": 1.0, "qaa": 0.6}, "M1": {"en": 0.5, "qaa": 0.5}})
    (runs / "seed2-rewarding").mkdir()  # started, never evaluated: left out

    cells = summarize_study(tmp_path)
    m1 = cells["rewarding|qaa|M1"]
    assert m1["mean"] == pytest.approx(0.65) and m1["sd"] == pytest.approx(statistics.stdev([0.7, 0.6]))
    assert m1["seeds"] == {0: 0.7, 1: 0.6}
    assert cells["rewarding|qaa|M2"]["seeds"] == {1: 0.8}
    assert cells["no-filters|en|M1"]["mean"] == 0.5
    assert json.loads((tmp_path / "study.json").read_text())["rewarding|en|M0"]["mean"] == pytest.approx(0.95)
    table = (tmp_path / "study.md").read_text().splitlines()
    assert table[2] == "| variant | lang | M0 | M1 | M2 |"
    assert "| rewarding | qaa | 0.500 ± 0.141 (n=2) | 0.650 ± 0.071 (n=2) | 0.800 (n=1) |" in table
    assert table.index("| rewarding | en | 0.950 ± 0.071 (n=2) | 1.000 ± 0.000 (n=2) | 1.000 (n=1) |") < table.index(
        "| no-filters | en | 1.000 (n=1) | 0.500 (n=1) | - |"
    )
    # paired with the same seed's M0: seed 0 +0.1, seed 1 +0.2
    assert m1["change_mean"] == pytest.approx(0.15) and m1["change_sd"] == pytest.approx(statistics.stdev([0.1, 0.2]))
    assert "change_mean" not in cells["rewarding|qaa|M0"]
    change = table[
        table.index("Change from M0 (the same seed's M0), mean ± sd over seeds [95% t-interval of the mean]") :
    ]
    # the 95% t-interval of the mean by hand: 0.15 ± t(0.975, 1 df) 12.706 x 0.0707 / sqrt(2)
    assert "| rewarding | qaa | +0.150 ± 0.071 [-0.485, +0.785] (n=2) | +0.400 (n=1) |" in change
    assert m1["change_ci_low"] == pytest.approx(0.15 - 12.7062 * 0.05, abs=1e-4)
    assert "| no-filters | en | -0.500 (n=1) | - |" in change
    assert (tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "study.json").read_text())["versions"] == []  # runs without a manifest
    assert table[-1] == "Library versions: not recorded"


def test_summary_reports_reward_accuracy_with_pairs_and_wall_time(tmp_path):
    runs = tmp_path / "runs"
    old = {"python": "3.11.7", "torch": "2.12.0"}
    new = {"python": "3.11.7", "torch": "2.13.0"}
    _fake_sandbox(tmp_path / "sandbox-seed0")  # built before sandbox.json recorded versions
    (tmp_path / "sandbox-seed1").mkdir()
    pair_accuracy = {
        split: {"implicit_reward": {"accuracy": reward, "n": 200}, "m0_likelihood": {"accuracy": 1.0, "n": 200}}
        for split, reward in (("train", 0.9), ("held_out", 0.85))
    }
    info = {"versions": new, "seed": 1, "aligned": {"pairs": 200, "pair_accuracy": pair_accuracy}}
    (tmp_path / "sandbox-seed1" / "sandbox.json").write_text(json.dumps(info))
    for seed, (acc, informative, seconds) in enumerate([(0.8, 40, 100.0), (0.6, 20, 140.0)]):
        run = runs / f"seed{seed}-icr"
        _scores(run, 0, {"M0": {"en": 1.0}, "M1": {"en": 1.0}})
        path = run / "iter_0" / "eval" / "scores.json"
        scores = json.loads(path.read_text())
        scores["reward"] = {"M0": {"qaa": {"reward_accuracy": acc, "informative": informative, "n": 50}}}
        path.write_text(json.dumps(scores))
        stages = {"iter_0/sample": {"seconds": seconds - 10}, "iter_0/train": {"seconds": 10.0, "versions": old}}
        if seed == 1:  # resumed under newer libraries: each distinct set is named once
            stages["iter_0/sample"]["versions"] = new
        (run / "manifest.json").write_text(json.dumps({"stages": stages}))
    cells = summarize_study(tmp_path)
    assert cells["reward|icr|qaa|M0"]["mean"] == pytest.approx(0.7) and cells["reward|icr|qaa|M0"]["informative"] == 60
    assert cells["seconds|icr"]["mean"] == pytest.approx(120.0)
    assert cells["seconds|icr"]["sd"] == pytest.approx(statistics.stdev([100.0, 140.0]))
    table = (tmp_path / "study.md").read_text()
    assert "| icr | qaa | 0.700 ± 0.141 (n=2, pairs=60) |" in table
    assert "| icr | 120 ± 28 (n=2) |" in table
    assert cells["alignment|implicit_reward|held_out"]["seeds"] == {1: 0.85}
    assert "| implicit_reward | held_out | 0.850 (n=1) |" in table
    assert "| m0_likelihood | train | 1.000 (n=1) |" in table
    assert json.loads((tmp_path / "study.json").read_text())["versions"] == [new, old]
    assert "\nLibrary versions: python 3.11.7, torch 2.13.0; python 3.11.7, torch 2.12.0\n" in table


def test_summary_without_runs_is_an_error(tmp_path):
    with pytest.raises(PolyriseError, match="no evaluated study runs"):
        summarize_study(tmp_path)


def test_controls_start_from_a_copy_of_the_rewarding_runs_generations(tmp_path):
    from polyrise.generation.cache import GenerationCache
    from polyrise.sandbox.study import _share_generations

    source = tmp_path / "seed0-rewarding"
    cache = GenerationCache(source / "generations.sqlite")
    cache.put_many({"k": "an answer"})  # left open, as a live run would: the copy goes through SQLite's backup
    control = tmp_path / "seed0-swapped"
    _share_generations(source, control)
    assert GenerationCache(control / "generations.sqlite").get_many(["k"]) == {"k": "an answer"}
    assert not list(control.glob(".*.tmp"))
    cache.put_many({"k2": "later"})
    _share_generations(source, control)  # an existing cache of the control is never replaced
    assert GenerationCache(control / "generations.sqlite").get_many(["k", "k2"]) == {"k": "an answer"}
    _share_generations(tmp_path / "seed1-rewarding", tmp_path / "seed1-nll0")  # nothing to share yet
    assert not (tmp_path / "seed1-nll0").exists()


def test_cli_study_passes_the_alignment_strength(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from polyrise import cli

    calls = []

    def fake_study(out, config, seeds, variants, iterations, console, *, align_pairs):
        calls.append((seeds, variants, iterations, align_pairs))
        (out / "study.md").write_text("the summary")
        return {}

    monkeypatch.setattr("polyrise.sandbox.run_study", fake_study)
    args = ["sandbox", "study", "--out", str(tmp_path), "--seeds", "0,3", "--variants", "icr,icr-random"]
    result = CliRunner().invoke(cli.app, [*args, "--iterations", "2", "--align-pairs", "2500"])
    assert result.exit_code == 0, result.output
    assert calls == [([0, 3], ["icr", "icr-random"], 2, 2500)] and "the summary" in result.output
    CliRunner().invoke(cli.app, args)
    assert calls[-1][-1] is None  # the default strength: `AlignSettings`'


def test_summary_counts_off_target_answers_the_agreement_target_and_the_methods_tokens(tmp_path):
    runs = tmp_path / "runs"
    (tmp_path / "vocabulary").mkdir()
    (tmp_path / "vocabulary" / "qaa.txt").write_text("ba\nko\nmi\n")
    answers = {
        "M0": ["Ba ko 7.", "Ba has 7 apples.", "7."],  # on target, off target (two English words), not judged
        "M1": ["Ko mi 3.", "BA KO 4."],  # the word list is compared lower-cased
    }
    for seed in (0, 1):
        run = runs / f"seed{seed}-rewarding"
        _scores(run, 0, {"M0": {"qaa": 0.5}, "M1": {"qaa": 0.6}})
        for label, outputs in answers.items():
            rows = [{"id": f"q{i}", "lang": "qaa", "output": text, "gold": "7"} for i, text in enumerate(outputs)]
            rows.append({"id": "q9", "lang": "en", "output": "Tom has 7 cups.", "gold": "7"})  # no word list: left out
            (run / "iter_0" / "eval" / f"mgsm_{label}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        stages = {
            "iter_0/eval_M0": {"seconds": 5.0, "counts": {"generated_tokens": 1000}},  # a measurement: not the method's
            "iter_0/prompts": {"seconds": 5.0, "counts": {"generated_tokens": 30 + seed}},
            "iter_0/train": {"seconds": 5.0, "counts": {"generated_tokens": 12}},
            "iter_0/eval_M1": {"seconds": 5.0, "counts": {"generated_tokens": 999}},
        }
        stats = {"qaa": {"prompts": 10, "english_checked": 8, "english_right": 6 + seed}, "qab": {"english_checked": 0}}
        (run / "iter_0" / "grpo_stats.json").write_text(json.dumps(stats))
        if seed == 1:  # recorded before polyrise counted tokens
            stages = {name: {"seconds": 5.0, "counts": {}} for name in stages}
        (run / "manifest.json").write_text(json.dumps({"stages": stages}))
    cells = summarize_study(tmp_path)
    assert cells["off_target|rewarding|qaa|M0"]["seeds"] == {0: 0.5, 1: 0.5}
    assert cells["off_target|rewarding|qaa|M0"]["judged"] == 4
    assert cells["off_target|rewarding|qaa|M1"]["mean"] == 0.0
    assert not any(key.startswith("off_target|rewarding|en") for key in cells)
    assert cells["tokens|rewarding"]["seeds"] == {0: 42}
    assert cells["english_target|rewarding|qaa|M0"]["seeds"] == {0: 0.75, 1: 0.875}
    assert cells["english_target|rewarding|qaa|M0"]["prompts"] == 16 and "english_target|rewarding|qab|M0" not in cells
    table = (tmp_path / "study.md").read_text()
    assert "| rewarding | qaa | 0.500 ± 0.000 (n=2, judged=4) | 0.000 ± 0.000 (n=2, judged=4) |" in table
    assert "| rewarding | 20 ± 0 (n=2) | 42 (n=1) |" in table
