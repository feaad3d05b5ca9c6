"""The whole loop on a tiny random model: artefacts, skipping, and resume after kill -9."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from polyrise.config import load_config
from polyrise.errors import PolyriseError
from polyrise.io import read_jsonl
from polyrise.models import load_model, resolve_model
from polyrise.records import DroppedPair, PreferencePair, Prompt, Response, Translation
from polyrise.runner import Runner, run_pipeline
from polyrise.templates import translation_prompt


def _config(tmp_path: Path, model_dir: Path, **extra) -> Path:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "instruction": text}) + "\n"
            for i, text in enumerate(["Give a tip.", "Name a colour.", "Say hello.", "Count to three."])
        )
    )
    cfg = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "model": {"spec": str(model_dir)},
        "languages": ["es", "de"],
        # random-model translations are no language and any length: keep every prompt too
        "prompts": {"source": str(prompts), "checks": {"enabled": False}},
        # sampled: greedy decoding of a random model repeats one (often blank) token
        "generation": {
            "policy": {"batch_size": 4},
            "answer": {"max_new_tokens": 12, "temperature": 1.0},
            "translate": {"max_new_tokens": 12, "temperature": 1.0},
        },
        # random-model text is no language and any length: keep every pair so training has data
        "langid": {"min_words": 100000},
        "training": {"batch_size": 4, "max_length": 96, "learning_rate": 1e-3},
        "heldout": {"prompts": {"source": "builtin:heldout", "limit": 2}, "max_new_tokens": 8},
        **extra,
    }
    if cfg.get("method", "language-imbalance") == "language-imbalance":  # its pair filters
        cfg["filters"] = {"min_length_ratio": 0.001, "max_length_ratio": 1000, "repeated_line_limit": 1000} | cfg.get(
            "filters", {}
        )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_one_iteration_end_to_end_and_rerun_skips(tmp_path, tiny_model_dir):
    # in-process stages (the stage processes have their own tests below): the same stages, without 9 interpreters
    config = load_config(_config(tmp_path, tiny_model_dir, stage_processes=False))
    [summary] = run_pipeline(config)
    it = config.run_dir / "iter_0"

    prompts = read_jsonl(it / "prompts.jsonl", Prompt)
    assert {p.lang for p in prompts} <= {"en", "es", "de"} and {p.lang for p in prompts} >= {"en"}
    responses = read_jsonl(it / "responses.jsonl", Response)
    assert sorted((r.id, r.lang) for r in responses) == sorted((p.id, p.lang) for p in prompts)

    pairs = read_jsonl(it / "pairs.jsonl", PreferencePair)
    for lang in ("es", "de"):
        assert any(p.lang == lang and p.via == lang for p in pairs), lang
        assert any(p.lang == "en" and p.via == lang for p in pairs), lang
    stats = json.loads((it / "pairs_stats.json").read_text())
    assert sum(s["target"]["kept"] + s["english"]["kept"] for s in stats.values()) == len(pairs)
    dropped = read_jsonl(it / "pairs_dropped.jsonl", DroppedPair)
    assert len(dropped) == sum(
        n for s in stats.values() for d in ("target", "english") for n in s[d]["dropped"].values()
    )

    base = load_model(resolve_model(str(tiny_model_dir)))
    trained = load_model(resolve_model(str(it / "model")))
    changed = [n for n, p in trained.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all("proj" in n for n in changed)  # LoRA touched the linear layers only

    scores = json.loads((it / "eval" / "scores.json").read_text())["heldout"]
    assert set(scores) == {"M0", "M1"} and set(scores["M1"]) == {"en", "es", "de"}
    assert json.dumps(summary["off_target"]) == json.dumps(scores)  # NaN (nothing identifiable) != NaN
    manifest = json.loads((config.run_dir / "manifest.json").read_text())["stages"]
    assert [k.split("/")[1] for k in manifest] == [
        "heldout_M0",
        "prompts",
        "generate",
        "translate",
        "pairs",
        "train",
        "heldout_M1",
    ]
    assert all(v["status"] == "done" and v["seconds"] >= 0 for v in manifest.values())

    before = {p.name: p.stat().st_mtime_ns for p in it.iterdir() if p.is_file()}
    run_pipeline(config)  # everything is up to date: nothing is rewritten
    assert before == {p.name: p.stat().st_mtime_ns for p in it.iterdir() if p.is_file()}

    changed_cfg = load_config(
        _config(
            tmp_path,
            tiny_model_dir,
            stage_processes=False,
            filters={
                "min_length_ratio": 0.001,
                "max_length_ratio": 1000,
                "repeated_line_limit": 999,
            },
        )
    )
    run_pipeline(changed_cfg)
    after = {p.name: p.stat().st_mtime_ns for p in it.iterdir() if p.is_file()}
    assert after["responses.jsonl"] == before["responses.jsonl"]  # upstream of the change: kept
    assert after["pairs.jsonl"] != before["pairs.jsonl"]  # the changed stage reran


def _processes_using(run_dir: Path) -> list[str]:
    """Command lines of live processes that name `run_dir` (a stage process does)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(run_dir) in text:
            found.append(text)
    return found


def _rows(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_kill_9_during_generation_then_resume(tmp_path, tiny_model_dir):
    config_path = _config(
        tmp_path,
        tiny_model_dir,
        iterations=1,
        heldout=None,
        generation={
            "policy": {"batch_size": 1},
            "answer": {"max_new_tokens": 48, "temperature": 1.0},
            "translate": {"max_new_tokens": 12, "temperature": 1.0},
        },
    )
    config = load_config(config_path)
    db = config.run_dir / "generations.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from polyrise.cli import main; main()", "run", str(config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while _rows(db) < 6 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _rows(db) >= 6, "the run should have cached some generations before it was killed"
    deadline = time.time() + 30
    while _processes_using(config.run_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert not _processes_using(config.run_dir), "the stage process must die with the run"
    it = config.run_dir / "iter_0"
    assert not (it / "pairs.jsonl").exists()

    run_pipeline(config)
    prompts = read_jsonl(it / "prompts.jsonl", Prompt)
    responses = read_jsonl(it / "responses.jsonl", Response)
    keys = [(r.id, r.lang) for r in responses]
    assert len(keys) == len(set(keys)) and set(keys) == {(p.id, p.lang) for p in prompts}
    manifest = json.loads((config.run_dir / "manifest.json").read_text())["stages"]
    assert manifest["iter_0/train"]["status"] == "done"
    assert not list(config.run_dir.rglob("*.tmp"))


@pytest.mark.parametrize("bad", ["missing-dir", "file-in-the-way"])
def test_unusable_model_or_output_dir(tmp_path, tiny_model_dir, bad):
    from polyrise.errors import PolyriseError

    if bad == "missing-dir":
        config = load_config(_config(tmp_path, tmp_path / "no-model"))
        with pytest.raises(PolyriseError, match="does not exist"):
            run_pipeline(config)
    else:
        (tmp_path / "runs").write_text("a file, not a directory")
        config = load_config(_config(tmp_path, tiny_model_dir))
        with pytest.raises(PolyriseError, match="cannot create the run directory"):
            run_pipeline(config)


def test_evaluation_stage_after_an_iteration_and_report(tmp_path, tiny_model_dir):
    from polyrise.reporting import write_report

    data = tmp_path / "data"
    data.mkdir()
    for lang, q in [("en", "Tom has 2 apples and buys 3. How many?"), ("es", "Tom tiene 2 manzanas y compra 3.")]:
        (data / f"mgsm_{lang}.jsonl").write_text(json.dumps({"query": q, "response": "5"}) + "\n")
        (data / f"choice_{lang}.jsonl").write_text(
            json.dumps({"id": "c1", "context": "The sky is", "choices": [" blue", " loud"], "label": 0}) + "\n"
        )
        (data / f"par_{lang}.jsonl").write_text(json.dumps({"id": "p1", "instruction": q}) + "\n")
    tasks = [
        {"task": "mgsm", "source": str(data / "mgsm_{lang}.jsonl"), "max_new_tokens": 8},
        {"task": "choice", "source": str(data / "choice_{lang}.jsonl"), "name": "toy-choice"},
        {"task": "translation", "source": str(data / "par_{lang}.jsonl"), "max_new_tokens": 8},
        {
            "task": "judge",
            "source": str(data / "par_{lang}.jsonl"),
            "max_new_tokens": 8,
            "judge": {"model": str(tiny_model_dir), "max_new_tokens": 8},
        },
    ]
    config = load_config(
        _config(tmp_path, tiny_model_dir, languages=["es"], heldout=None, evaluation=tasks, stage_processes=False)
    )
    [summary] = run_pipeline(config)
    eval_dir = config.run_dir / "iter_0" / "eval"
    scores = json.loads((eval_dir / "scores.json").read_text())
    assert set(scores) == {"mgsm", "toy-choice", "translation", "judge"}
    assert set(scores["mgsm"]) == {"M0", "M1"} and set(scores["mgsm"]["M1"]) == {"en", "es"}
    assert scores["toy-choice"]["M0"]["es"]["n"] == 1
    assert set(scores["translation"]["M1"]) == {"en-es", "es-en"}
    assert scores["judge"]["M0"] == {}  # nothing to compare M0 with (no reference)
    assert {"en", "es"} <= set(scores["judge"]["M1"])  # M1 judged head-to-head against M0
    for name in ("mgsm_M0.jsonl", "mgsm_M1.jsonl", "judge_M1_judgements.jsonl", "judge_M1/es/model_outputs.json"):
        assert (eval_dir / name).is_file(), name
    assert json.dumps(summary["scores"]) == json.dumps(scores)
    md, _ = write_report(config.run_dir)
    assert "## mgsm: accuracy" in md.read_text()


def test_a_failing_stage_process_reports_its_own_message(tmp_path, tiny_model_dir):
    config = load_config(_config(tmp_path, tiny_model_dir))
    assert config.stage_processes
    runner = Runner(config)
    generate = runner.find_stage("iter_0/generate")  # no prompts.jsonl yet: the stage's child fails reading it
    with runner, pytest.raises(PolyriseError, match=r"stage iter_0/generate failed: .*prompts\.jsonl"):
        runner.run_stage(generate)
    assert not any(p.exists() for p in generate.outputs) and runner.manifest.stages == {}


def test_fixed_translator_over_an_openai_server(tmp_path, tiny_model_dir, server):
    # every translation request is answered by the server; answers come from the local policy
    server.raw_reply = json.dumps({"choices": [{"message": {"content": "hola mundo</translated>"}}]}).encode()
    translator = {"engine": "openai", "openai": {"base_url": server.base_url, "model": "mt", "api_key_env": None}}
    answer = {"max_new_tokens": 12, "temperature": 1.0}  # greedy decoding of a random model is blank
    generation = {"policy": {"batch_size": 4}, "translator": translator, "answer": answer}
    config = load_config(_config(tmp_path, tiny_model_dir, heldout=None, stage_processes=False, generation=generation))
    run_pipeline(config)
    it = config.run_dir / "iter_0"
    attempts = read_jsonl(it / "prompt_translations.jsonl", Translation)
    assert len(attempts) == 4 * 2 and {a.output for a in attempts} == {"hola mundo"}
    responses = read_jsonl(it / "responses.jsonl", Response)
    assert len(responses) == 4 * 3 and all(r.output != "hola mundo" for r in responses)  # the policy answered
    translated = {
        translation_prompt(t.source, t.src_lang, t.lang)
        for t in [*attempts, *read_jsonl(it / "translations.jsonl", Translation)]
    }
    assert {r["body"]["messages"][0]["content"] for r in server.requests} == translated  # every one, by the server
    assert {r["body"]["model"] for r in server.requests} == {"mt"}
    pairs = read_jsonl(it / "pairs.jsonl", PreferencePair)
    assert pairs and all(p.chosen == "hola mundo" for p in pairs if p.lang != "en")  # translated English answers


def test_reward_is_measured_against_gold_answers_and_by_a_judge(tmp_path, tiny_model_dir):
    """Prompts with gold answers: every pair is labelled (iter_0/reward.jsonl) and the reward's accuracy reaches
    scores.json and pairs_stats.json; `reward_judge` judges a seeded sample of the kept pairs in both orders."""
    gold = tmp_path / "gold.jsonl"
    problems = [("What is 2 + 3?", "5"), ("What is 4 + 4?", "8"), ("What is 9 - 2?", "7")]
    gold.write_text(
        "".join(json.dumps({"id": f"g{i}", "instruction": q, "answer": a}) + "\n" for i, (q, a) in enumerate(problems))
    )
    judge = {"judge": {"engine": "hf", "model": str(tiny_model_dir), "max_new_tokens": 4}, "sample": 2}
    config = load_config(
        _config(
            tmp_path,
            tiny_model_dir,
            prompts={"source": str(gold), "checks": {"enabled": False}},
            reward_judge=judge,
            stage_processes=False,
        )
    )
    run_pipeline(config)
    it = config.run_dir / "iter_0"
    pairs = read_jsonl(it / "pairs.jsonl", PreferencePair)
    labels = [json.loads(line) for line in (it / "reward.jsonl").read_text().splitlines()]
    assert len(labels) == len(pairs) > 0 and {x["id"] for x in labels} <= {"g0", "g1", "g2"}
    scores = json.loads((it / "eval" / "scores.json").read_text())
    reward = scores["reward"]["M0"]
    assert sum(row["n"] for row in reward.values()) == len(pairs)
    for row in reward.values():
        shares = [row[k] for k in ("right_wrong", "both_right", "both_wrong", "wrong_right")]
        assert sum(shares) == pytest.approx(1.0) and row["informative"] <= row["n"]
        assert {"gap_baseline", "chosen_from_accuracy", "both_wrong_ci_low"} <= row.keys()  # LIDR knows y_en, y_L
    stats = json.loads((it / "pairs_stats.json").read_text())
    assert stats["es"]["prompts"]["given"] == 0 and stats["es"]["prompts"]["self_translated"] <= 3
    judged = [json.loads(line) for line in (it / "reward_judge.jsonl").read_text().splitlines()]
    assert len(judged) == min(2, len(pairs))
    by_row = scores["reward_judge"]["M0"]
    assert by_row["average"]["n"] + by_row["average"]["invalid"] == len(judged)
    manifest = json.loads((config.run_dir / "manifest.json").read_text())["stages"]
    assert "iter_0/reward_judge" in manifest


def test_console_logs_and_tensorboard_tracking_of_a_run(tmp_path, tiny_model_dir, capfd):
    """Piped, the console has polyrise's lines and one line per training step, no trainer dicts or library
    warnings (those are in the stage's log); with `tracking: tensorboard` the event files hold the trainer's
    loss of every step and polyrise's per-iteration metrics, equal to the run's own files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from polyrise.tracking import flatten

    config = load_config(_config(tmp_path, tiny_model_dir, tracking={"backend": "tensorboard"}))
    run_pipeline(config)
    out, err = capfd.readouterr()
    run_dir = config.run_dir
    log = [json.loads(line) for line in (run_dir / "iter_0" / "model" / "training_log.jsonl").read_text().splitlines()]
    steps = [row for row in log if "loss" in row]
    for row in steps:  # `step 1/2  loss 0.6931  margin 0.0000  reward acc 0.0000  token acc 0.0000  3.10 it/s`
        assert f"step {row['step']}/{len(steps)}  loss {row['loss']:.4f}  margin {row['rewards/margins']:.4f}" in out
    assert "{'loss'" not in out + err and "Warning" not in out + err
    assert '"loss": ' in (run_dir / "logs" / "iter_0" / "train.log").read_text()  # the trainer's dicts

    def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
        events = EventAccumulator(str(folder)).Reload()
        return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}

    trainer = scalars(run_dir / "tensorboard" / "tiny-iter_0-train")
    assert trainer["train/loss"] == [(row["step"], pytest.approx(row["loss"], rel=1e-6)) for row in steps]
    ours = scalars(run_dir / "tensorboard" / "tiny")
    stats = json.loads((run_dir / "iter_0" / "pairs_stats.json").read_text())
    counts = json.loads((run_dir / "manifest.json").read_text())["stages"]["iter_0/train"]["counts"]
    scores = json.loads((run_dir / "iter_0" / "eval" / "scores.json").read_text())
    expected = {
        **{
            (k, 0): v for k, v in flatten({"pairs": stats, "train": counts, "heldout": scores["heldout"]["M0"]}).items()
        },
        **{(k, 1): v for k, v in flatten({"heldout": scores["heldout"]["M1"]}).items()},
    }
    assert ("pairs/es/target/kept", 0) in expected and ("train/train_loss", 0) in expected
    logged = {(tag, step): value for tag, events in ours.items() for step, value in events}
    assert logged == pytest.approx(expected, rel=1e-6)
    run_pipeline(config)  # up to date: tracked when it ran, not again
    assert scalars(run_dir / "tensorboard" / "tiny") == ours
