"""The CLI: bad input gives one clear line on stderr, exit code 1, and no output file (in-process, through
`polyrise.cli.main`: the `polyrise` fixture)."""

from __future__ import annotations

import json


def test_unknown_config_key_exits_1_with_one_message(tmp_path, polyrise):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: x\nlanguages: [es]\ngeneration:\n  batch: 4\n")
    result = polyrise("run", str(cfg))
    assert result.returncode == 1
    assert "run.yaml: generation.batch: Extra inputs are not permitted" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_malformed_jsonl_names_file_and_line_and_writes_nothing(tmp_path, polyrise):
    good = {"id": "1", "lang": "en", "instruction": "Hi"}
    (tmp_path / "prompts.jsonl").write_text(json.dumps(good) + "\n")
    (tmp_path / "responses.jsonl").write_text(
        json.dumps({"id": "1", "lang": "en", "prompt": "Hi", "output": "x"}) + "\n{oops\n"
    )
    (tmp_path / "translations.jsonl").write_text("")
    out = tmp_path / "pairs.jsonl"
    result = polyrise(
        "pairs",
        "--prompts",
        "prompts.jsonl",
        "--responses",
        "responses.jsonl",
        "--translations",
        "translations.jsonl",
        "--languages",
        "es",
        "-o",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "responses.jsonl:2: invalid JSON" in result.stderr
    assert not out.exists()


def test_unknown_language_and_missing_model(tmp_path, polyrise):
    (tmp_path / "r.jsonl").write_text(json.dumps({"id": "1", "lang": "en", "output": "Hi"}) + "\n")
    result = polyrise("translate", str(tmp_path / "r.jsonl"), "--to", "es,xx", "-m", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert "unknown language code 'xx'; known codes:" in result.stderr
    result = polyrise("translate", str(tmp_path / "r.jsonl"), "--to", "es", "-m", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_generate_through_an_openai_server_and_engine_flag_errors(tmp_path, server, polyrise):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "lang": "en", "instruction": f"hi {i}"}) + "\n" for i in range(3))
    )
    out = tmp_path / "responses.jsonl"
    args = ["generate", str(prompts), "-o", str(out), "--engine", "openai", "--model", "m", "--api-key-env", ""]
    result = polyrise(*args, "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["output"] for line in out.read_text().splitlines()] == [f"echo:hi {i}" for i in range(3)]
    again = polyrise(*args, "--base-url", server.base_url)
    assert "(3 from cache)" in again.stdout and len(server.requests) == 3

    missing = polyrise(*args)
    assert missing.returncode == 1 and "--engine openai needs --base-url and --model" in missing.stderr
    unknown = polyrise("generate", str(prompts), "--engine", "tgi")
    assert unknown.returncode == 1 and "--engine: unknown engine 'tgi'; known: hf, vllm, openai" in unknown.stderr


def test_piped_output_keeps_long_paths_on_one_line(tmp_path, server, polyrise):
    """Piped (not a terminal), a printed path is never wrapped, however long: scripts read it."""
    deep = tmp_path.joinpath(*[f"a-rather-long-folder-name-{i}" for i in range(6)])
    deep.mkdir(parents=True)
    prompts = deep / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "q0", "lang": "en", "instruction": "hi"}) + "\n")
    out, cache = deep / "responses.jsonl", deep / "cache.sqlite"
    args = ["generate", str(prompts), "-o", str(out), "--cache", str(cache), "--engine", "openai", "--model", "m"]
    args += ["--api-key-env", "", "--base-url", server.base_url]
    assert len(str(out)) > 200
    first = polyrise(*args)
    assert first.returncode == 0 and first.stdout == f"wrote 1 responses to {out} (0 from cache)\n", first.stderr
    [shard] = polyrise(*args, "--shard", "0/2").stdout.splitlines()
    assert f"generated into {cache} (1 were there)" in shard and shard.endswith(f"writes {out}")


def test_eval_options_are_checked_by_the_tasks_own_settings(tmp_path):
    from typer.testing import CliRunner

    from polyrise.cli import app

    out = tmp_path / "out"
    cases = [
        (["--task", "mgsm", "--labels", "a,b"], "--labels: not an option of task 'mgsm'"),
        (["--task", "mgsm", "--limit", "0"], "--limit: Input should be greater than or equal to 1"),
        (["--task", "reflik"], "--source: Field required"),
        (["--task", "choice", "--source", "xnli", "--set", "few_shot=2"], "--set few_shot: not an option of task"),
        (["--task", "mgsm", "--set", "few_shot=many"], "--set few_shot: Input should be a valid integer"),
        (["--task", "mgsm", "--set", "few_shot"], "--set few_shot: expected KEY=VALUE"),
        (["--task", "judge", "--source", "s"], "--task judge: task 'judge' needs a judge"),
        (["--task", "bleu"], "--task bleu: unknown task 'bleu'; known: mgsm, judge"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, ["eval", *args, "--out", str(out)])
        assert result.exit_code == 1 and message in str(result.exception), (args, result.exception)
    assert not out.exists()  # nothing was opened or written


def test_eval_judge_head_to_head_against_a_baseline_model(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from polyrise.cli import app

    for lang in ("en", "de"):
        rows = [{"id": f"q{i}", "instruction": f"Question {i} in {lang}?"} for i in range(2)]
        (tmp_path / f"{lang}.json").write_text(json.dumps(rows))
    out, model = tmp_path / "out", str(tiny_model_dir)
    args = ["eval", "--task", "judge", "--source", str(tmp_path / "{lang}.json"), "--langs", "en,de", "-m", model]
    args += ["--baseline-model", model, "--judge-model", model, "--max-new-tokens", "4", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--set", "judge.max_new_tokens=4", "--label", "M1"])
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "scores.json").read_text())["judge"]
    assert list(scores) == ["M1"] and set(scores["M1"]) == {"en", "de", "average"}
    assert [scores["M1"][lang]["n"] + scores["M1"][lang]["invalid"] for lang in ("en", "de")] == [2, 2]
    for name in ("judge_baseline.jsonl", "judge_M1.jsonl", "judge_M1_judgements.jsonl"):
        assert len((out / name).read_text().splitlines()) == 4, name
    assert (out / "judge_M1" / "de" / "model_outputs.json").is_file()


def test_score_rescores_saved_mgsm_outputs(tmp_path, polyrise):
    rows = [{"id": 1, "lang": "en", "output": "The answer is 5.", "gold": 5, "extra": "ignored"}]
    rows.append({"id": "2", "lang": "en", "output": "no idea", "gold": "3"})
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = polyrise("score", "mgsm", str(tmp_path / "p.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "0.500" in result.stdout
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "1", "lang": "en", "output": "x"}) + "\n")
    bad = polyrise("score", "mgsm", str(tmp_path / "p.jsonl"))
    assert bad.returncode == 1 and "p.jsonl:1: gold: Field required" in bad.stderr
