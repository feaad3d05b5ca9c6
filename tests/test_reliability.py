"""Reliability of `polyrise run` and its inputs: one run per run dir, nothing written by a run that cannot
start, damaged manifests and outputs, run names, duplicate and undecodable input rows, and Ctrl-C."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from test_pipeline import _config, _processes_using
from test_runner import _ran, _run

from polyrise.config import RunConfig, load_config
from polyrise.errors import PolyriseError
from polyrise.io import read_json_array, read_jsonl, write_jsonl
from polyrise.models import ResolvedModel
from polyrise.records import PreferencePair, Response
from polyrise.runner import Runner, run_pipeline
from polyrise.settings import PromptSource
from polyrise.sources import load_prompts

MAIN = "from polyrise.cli import main; main()"


def _small(tmp_path: Path, model_dir: Path, **extra) -> Path:
    """A config that runs in seconds: one process, no held-out set, short answers."""
    generation = {
        "policy": {"batch_size": 4},
        "answer": {"max_new_tokens": 4, "temperature": 1.0},
        "translate": {"max_new_tokens": 4, "temperature": 1.0},
    }
    settings = {"heldout": None, "stage_processes": False, "languages": ["es"], "generation": generation}
    return _config(tmp_path, model_dir, **(settings | extra))


def _sigint_default() -> None:
    """In the child: Ctrl-C as in a terminal, even when the tests run as a shell's background job (which ignores
    SIGINT, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(config_path: Path, out: Path, **popen) -> subprocess.Popen[bytes]:
    """`polyrise run CONFIG` in the background, its stdout and stderr into `out`.{out,err}."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(f"{out}.out", "wb") as so, open(f"{out}.err", "wb") as se:
        return subprocess.Popen(
            [sys.executable, "-c", MAIN, "run", str(config_path)],
            stdout=so,
            stderr=se,
            env=env,
            preexec_fn=_sigint_default,
            **popen,
        )


def _wait_for_stage(proc: subprocess.Popen[bytes], out: Path, timeout: float = 180) -> str:
    """The name of the first stage the run started (its `<stage> …` line)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in Path(f"{out}.out").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.rstrip().endswith("…"):
                return line.rstrip().removesuffix("…").strip()
        assert proc.poll() is None, Path(f"{out}.err").read_text(encoding="utf-8", errors="replace")[-3000:]
        time.sleep(0.05)
    raise AssertionError("the run started no stage in time")


def _stages(run_dir: Path) -> dict[str, dict]:
    manifest = run_dir / "manifest.json"
    return json.loads(manifest.read_text())["stages"] if manifest.is_file() else {}


# -- 1. one run per run dir ---------------------------------------------------------------------------------------


def test_a_second_run_of_a_busy_run_dir_stops_at_once(tmp_path, tiny_model_dir):
    path = _small(tmp_path, tiny_model_dir)
    run_dir = load_config(path).run_dir
    first = _start(path, tmp_path / "first")
    try:
        _wait_for_stage(first, tmp_path / "first")
        first.send_signal(signal.SIGSTOP)  # hold it inside its stage while the second one starts
        config_before, manifest_before = (run_dir / "config.yaml").read_bytes(), _stages(run_dir)
        start = time.perf_counter()
        second = subprocess.run(
            [sys.executable, "-c", MAIN, "run", str(path)], capture_output=True, encoding="utf-8", timeout=120
        )
        seconds = time.perf_counter() - start
        assert second.returncode == 1, second.stderr
        assert "Traceback" not in second.stderr and "…" not in second.stdout  # no stage of its own
        assert second.stderr.strip().splitlines()[-1] == (
            f"error: {run_dir} is in use by PID {first.pid} (another polyrise run); wait for it or stop it"
        )
        assert seconds < 60, seconds
        assert (run_dir / "config.yaml").read_bytes() == config_before and _stages(run_dir) == manifest_before
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=600) == 0, (tmp_path / "first.err").read_text(encoding="utf-8")[-3000:]
    stages = _stages(run_dir)
    assert {"iter_0/prompts", "iter_0/generate", "iter_0/translate", "iter_0/pairs", "iter_0/train"} == set(stages)
    assert all(v["status"] == "done" for v in stages.values())
    assert (run_dir / "iter_0" / "model" / "config.json").is_file()


def test_the_run_lock_is_held_across_processes_and_dies_with_its_holder(tmp_path, tiny_model_dir):
    path = _small(tmp_path, tiny_model_dir)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from polyrise.config import load_config; from polyrise.runner import Runner; "
            "r = Runner(load_config(sys.argv[1])).__enter__(); print('locked', flush=True); time.sleep(600)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(PolyriseError, match=rf"is in use by PID {holder.pid} \(another polyrise run\)"):
            Runner(load_config(path), Console(file=io.StringIO())).__enter__()
        holder.kill()  # kill -9: the kernel drops the lock
        holder.wait()
    finally:
        holder.kill()
    runner = Runner(load_config(path), Console(file=io.StringIO()))
    # a stage process (child) rebuilds the run while its parent holds the lock: it must not try to take it
    with runner, Runner(load_config(path), Console(file=io.StringIO()), child=True):
        assert (runner.run_dir / "config.yaml").is_file()
    with Runner(load_config(path), Console(file=io.StringIO())):  # released when the first run's block ended
        pass


# -- 2. a run that cannot start writes nothing ---------------------------------------------------------------------


CANNOT_START = ["prompts-json", "prompts-missing", "heldout", "model", "translator", "questions"]
CANNOT_START += ["evaluation", "eval-{lang}"]


@pytest.mark.parametrize("bad", CANNOT_START)
def test_a_run_that_cannot_start_writes_nothing(tmp_path, tiny_model_dir, bad):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "p1", "instruction": "fine"}\n{"id": oops}\n')
    extra: dict = {
        "prompts-json": {"prompts": {"source": str(broken)}},
        "prompts-missing": {"prompts": {"source": str(tmp_path / "nowhere.jsonl")}},
        "heldout": {"heldout": {"prompts": {"source": str(broken)}, "max_new_tokens": 2}},
        "model": {"model": {"spec": str(tmp_path / "no-model")}},
        "translator": {
            "generation": {"translator": {"engine": "hf", "model": str(tmp_path / "no-model")}},
        },
        "questions": {
            "method": "question-alignment",
            "alignment": {"train": ["es"], "questions": {"source": str(broken)}},
            "training": {"batch_size": 4, "max_length": 96},
        },
        "evaluation": {"evaluation": [{"task": "mgsm", "source": str(broken), "langs": ["en"]}]},
        "eval-{lang}": {"evaluation": [{"task": "mgsm", "source": str(tmp_path / "mgsm_{lang}.jsonl")}]},
    }[bad]
    (tmp_path / "mgsm_en.jsonl").write_text(json.dumps({"query": "1+1?", "response": "2"}) + "\n")  # es: missing
    config = load_config(_small(tmp_path, tiny_model_dir, **extra))
    with pytest.raises(PolyriseError):
        run_pipeline(config, Console(file=io.StringIO()))
    assert not config.output_dir.exists()  # no run dir, no config.yaml, no generations.sqlite


def test_a_broken_rerun_keeps_the_config_of_the_run_dir(tmp_path, tiny_model_dir):
    good = load_config(_small(tmp_path, tiny_model_dir))
    good.run_dir.mkdir(parents=True)  # the run dir of a run that finished
    saved = b"# the config that ran\n"
    (good.run_dir / "config.yaml").write_bytes(saved)
    listing = sorted(p.name for p in good.run_dir.iterdir())

    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b'{"id": "p1", "instruction": "fine"}\n{"id": "p2", "instruction": \n')
    bad = good.model_copy(update={"prompts": PromptSource(source=str(broken))})
    with pytest.raises(PolyriseError, match=r"broken\.jsonl:2: invalid JSON"):
        run_pipeline(bad, Console(file=io.StringIO()))
    assert (good.run_dir / "config.yaml").read_bytes() == saved
    assert sorted(p.name for p in good.run_dir.iterdir()) == listing


# -- 3. a manifest that cannot be read --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["{not json", "[]", '{"stages": 3}', '{"stages": {"iter_0/prompts": 1}}', "\xff"])
def test_an_unreadable_manifest_is_one_error_naming_it(tmp_path, tiny_model_dir, text):
    config = load_config(_small(tmp_path, tiny_model_dir))
    manifest = config.run_dir / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_bytes(text.encode("latin-1"))
    with pytest.raises(PolyriseError, match=rf"^{re.escape(str(manifest))}: .*delete it"):
        run_pipeline(config, Console(file=io.StringIO()))
    assert manifest.read_bytes() == text.encode("latin-1")  # left for the user to look at
    assert not (config.run_dir / "config.yaml").exists()


# -- 4. outputs are checked by content -----------------------------------------------------------------------------


def test_a_damaged_output_reruns_its_stage(tmp_path, tiny_model_dir):
    path = _small(tmp_path, tiny_model_dir)
    first = _run(path)
    weights = first.layout.model_dir(0) / "model.safetensors"
    weights.unlink()
    assert _ran(_run(path)) == {"iter_0/train"}
    assert weights.is_file()

    responses = first.layout.iter_dir(0) / "responses.jsonl"
    rows = responses.read_text().splitlines(keepends=True)
    responses.write_text(rows[0])  # truncated
    assert _ran(_run(path)) == {"iter_0/generate"}
    assert len(read_jsonl(responses, Response)) == len(rows)
    assert _ran(_run(path)) == set()


# -- 5. the run's name -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../..", "", ".", "..", "a/b", "a\\b", "/abs"])
def test_a_run_name_is_one_path_component(tmp_path, name):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"name": name, "output_dir": str(tmp_path / "runs")}))
    with pytest.raises(PolyriseError, match=r"config\.yaml: name: "):
        load_config(path)
    assert RunConfig(name="my-run_1.2").run_dir.name == "my-run_1.2"


# -- 6. duplicate prompt ids -------------------------------------------------------------------------------------


def test_a_duplicate_prompt_id_names_both_lines(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": "p1", "instruction": "a"}, {"id": "p2", "instruction": "b"}, {"id": "p1", "instruction": "c"}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PolyriseError, match=rf"^{re.escape(str(prompts))}:3: duplicate id 'p1' \(first at line 1\)$"):
        load_prompts(PromptSource(source=str(prompts)), ["en"], "en")
    # the same id in two languages is one prompt in both
    rows[2]["lang"] = "es"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = load_prompts(PromptSource(source=str(prompts)), ["en", "es"], "en")
    assert [(p.id, p.lang) for p in got] == [("p1", "en"), ("p2", "en"), ("p1", "es")]
    rows[0]["lang"] = "en"  # explicit and defaulted language are the same language
    rows[2].pop("lang")
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PolyriseError, match=r":3: duplicate id 'p1' \(first at line 1\)"):
        load_prompts(PromptSource(source=str(prompts)), ["en"], "en")


# -- 7. undecodable bytes --------------------------------------------------------------------------------------


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b'{"id": "p1", "instruction": "ok"}\n{"id": "p2", "instruction": "caf\xe9"}\n')
    with pytest.raises(PolyriseError, match=rf"^{re.escape(str(prompts))}:2: not valid UTF-8 \("):
        load_prompts(PromptSource(source=str(prompts)), ["en"], "en")

    predictions = tmp_path / "predictions.jsonl"
    predictions.write_bytes(b'{"id": "1", "lang": "en", "output": "\xff", "gold": "5"}\n')
    with pytest.raises(PolyriseError, match=rf"^{re.escape(str(predictions))}:1: not valid UTF-8 \("):
        read_jsonl(predictions, Response)

    array = tmp_path / "outputs.json"
    array.write_bytes(b'[\n{"instruction": "x",\n "output": "\x81"}]\n')
    with pytest.raises(PolyriseError, match=rf"^{re.escape(str(array))}:3: not valid UTF-8 \("):
        read_json_array(array)

    config = _config(tmp_path, tiny_model_dir)
    config.write_bytes(config.read_bytes() + b"# r\xe9sum\xe9\n")
    with pytest.raises(PolyriseError, match=rf"^{re.escape(str(config))}(:\d+)?: not valid UTF-8"):
        load_config(config)


# -- 8. what a path is when it is not a file -----------------------------------------------------------------------


def test_a_path_that_is_not_a_regular_file_says_what_it_is(tmp_path):
    folder = tmp_path / "prompts.jsonl"
    folder.mkdir()
    with pytest.raises(PolyriseError, match=rf"^{re.escape(str(folder))}: is a directory"):
        load_prompts(PromptSource(source=str(folder)), ["en"], "en")
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(PolyriseError, match=rf"^{re.escape(str(fifo))}: is not a regular file"):
        load_prompts(PromptSource(source=str(fifo)), ["en"], "en")
    with pytest.raises(PolyriseError, match=rf"^{re.escape(str(tmp_path))}: is a directory"):
        load_config(tmp_path)
    with pytest.raises(PolyriseError, match=rf"^{re.escape(str(fifo))}: is not a regular file"):
        load_config(fifo)
    with pytest.raises(PolyriseError, match=r"no such config file"):
        load_config(tmp_path / "missing.yaml")


# -- 9. Ctrl-C ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage_processes", [False, True])
def test_ctrl_c_during_a_stage_says_how_to_resume(tmp_path, tiny_model_dir, stage_processes):
    path = _small(tmp_path, tiny_model_dir, stage_processes=stage_processes)
    run_dir = load_config(path).run_dir
    proc = _start(path, tmp_path / "run", start_new_session=True)
    try:
        name = _wait_for_stage(proc, tmp_path / "run")
        if stage_processes:  # Ctrl-C reaches the stage process too: wait until it runs
            deadline = time.time() + 60
            while not any(" stage " in c for c in _processes_using(run_dir)) and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(1)  # past its first imports (an interrupt there is Python's own traceback)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = (tmp_path / "run.err").read_text(encoding="utf-8")
    assert "Traceback" not in err, err[-3000:]
    # (the line may follow a progress bar's last update)
    iteration = name.split("/")[0].removeprefix("iter_")
    assert err.rstrip().endswith(
        f"interrupted during stage {name} (iteration {iteration}); finished stages are kept; "
        f"to resume: polyrise run {path}"
    )
    assert name not in _stages(run_dir)
    deadline = time.time() + 30
    while _processes_using(run_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert not _processes_using(run_dir)


@pytest.mark.parametrize("damage", ["garbage", "cut", "bad_page"])
def test_a_damaged_generation_cache_is_moved_aside_and_rebuilt(tmp_path, damage, caplog):
    """The cache is disposable: garbage, a cut file or a damaged page deep inside never blocks a run; it is
    moved to `<name>.corrupt`, said once, and the outputs are generated again. Only polyrise's own caches are."""
    import sqlite3

    from polyrise.generation.cache import GenerationCache

    path = tmp_path / "generations.sqlite"
    cache = GenerationCache(path)
    cache.put_many({f"k{i}": "x" * 3000 for i in range(400)})  # many pages
    cache.close()
    with sqlite3.connect(path) as db:  # fold the WAL in, so the damage below hits the real file
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    if damage == "garbage":  # past SQLite's header (a file with none is not polyrise's: never moved, see below)
        data[100:] = b"this is not a database at all" * 100
    elif damage == "cut":
        data[:] = data[:100]
    else:
        data[len(data) // 2 : len(data) // 2 + 8192] = b"\xff" * 8192
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        cache = GenerationCache(path)
        found = cache.get_many([f"k{i}" for i in range(400)])
        cache.put_many({"new": "y"})
    assert "new" in cache.get_many(["new"])
    assert (tmp_path / "generations.sqlite.corrupt").is_file()
    assert len(found) < 400 and "moved it to" in caplog.text and str(path) in caplog.text


def test_ctrl_c_is_honoured_at_once_while_a_server_hangs(server, tmp_path):
    """`polyrise translate --engine openai` against a server that never answers: SIGINT ends it within a second or
    two (the defaults would wait 6 x 300 s), nothing half-written, the key never printed."""
    import signal
    import subprocess
    import sys
    import time

    server.hang = 120.0
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": str(i), "lang": "en", "instruction": f"Hi {i}."}) + "\n" for i in range(8))
    )
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "polyrise.cli", "translate", str(prompts), "--to", "es", "--out", str(out)]
    command += ["--engine", "openai", "--base-url", server.base_url, "--model", "m", "--api-key-env", "FAKE_KEY"]
    env = {**os.environ, "FAKE_KEY": "sk-secret-123"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_sigint_default
    )
    deadline = time.time() + 60
    while not server.requests and time.time() < deadline:  # requests in flight
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    start = time.time()
    _, err = proc.communicate(timeout=30)
    assert time.time() - start < 3, err
    assert proc.returncode == 130 and "interrupted; rerun the same command" in err, (proc.returncode, err)
    assert "sk-secret-123" not in err and "Traceback" not in err
    assert not out.exists()


def test_an_unexpected_exception_is_one_line_naming_the_log(monkeypatch, capsys):
    """At the CLI boundary a bug is one line with the exception and where its traceback is; tests (and
    POLYRISE_TRACEBACK=1) still see the real exception."""
    from polyrise import cli

    def broken() -> None:
        raise ValueError("something inside went wrong")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.delenv("POLYRISE_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith("error: unexpected ValueError: something inside went wrong")
    log = Path(err.split("the traceback is in ")[1].split(";")[0])
    assert "Traceback" in log.read_text() and "broken" in log.read_text()
    monkeypatch.setenv("POLYRISE_TRACEBACK", "1")
    with pytest.raises(ValueError, match="something inside"):
        cli.main()


def test_outputs_and_row_languages_are_checked_before_any_model_loads(tmp_path):
    from typer.testing import CliRunner

    from polyrise.cli import app

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"id": "1", "lang": "en", "instruction": "Hi."}\n{"id": "2", "lang": "xx", "instruction": "?"}\n'
    )
    for command in (["generate", str(prompts)], ["translate", str(prompts), "--to", "es"]):
        result = CliRunner().invoke(app, [*command, "--model", "/nonexistent/model", "--out", str(tmp_path)])
        assert result.exit_code == 1 and f"--out {tmp_path}: is a directory" in str(result.exception)
        result = CliRunner().invoke(
            app, [*command, "--model", "/nonexistent/model", "--out", str(tmp_path / "o.jsonl")]
        )
        assert result.exit_code == 1 and f"{prompts}: row '2': unknown language code 'xx'" in str(result.exception)
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "generations.sqlite").exists()


def test_translate_timeout_and_retries_are_options(server, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from polyrise.cli import app

    server.hang = 5.0
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "1", "lang": "en", "instruction": "Hi."}\n')
    args = ["translate", str(prompts), "--to", "es", "--out", str(tmp_path / "t.jsonl"), "--engine", "openai"]
    args += [
        "--base-url",
        server.base_url,
        "--model",
        "m",
        "--api-key-env",
        "",
        "--timeout",
        "0.3",
        "--max-retries",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "APITimeoutError after 2 attempts" in str(result.exception)
    assert len(server.requests) == 2


def test_a_missing_optional_dependency_is_one_line_naming_the_extra_at_config_load(tmp_path, monkeypatch):
    """A `translation` evaluation without sacrebleu fails when the config loads, before any work, naming the key."""
    import importlib.util

    from polyrise.config import load_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sacrebleu" else real(name, *a))
    config = tmp_path / "run.yaml"
    config.write_text("evaluation:\n  - {task: translation, source: 'data/{lang}.jsonl'}\n")
    with pytest.raises(PolyriseError) as error:
        load_config(config)
    message = str(error.value)
    assert "evaluation.0" in message and "the translation task needs sacrebleu" in message
    assert "pip install 'polyrise[eval]'" in message


@pytest.mark.parametrize(
    ("field", "value"), [("hidden_size", "sixty-four"), ("max_position_embeddings", "long"), ("vocab_size", [1, 2])]
)
def test_a_model_config_with_wrong_types_names_the_file(tiny_model_dir, tmp_path, field, value):
    import shutil

    from polyrise.models import load_model, resolve_model

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {field: value}))
    with pytest.raises(PolyriseError, match=rf"^{model}/config.json: cannot load the model"):
        load_model(resolve_model(str(model)))


def test_a_prompt_longer_than_the_context_is_one_error_before_any_batch(tiny_model_dir, tmp_path):
    """A prompt past the model's context (2048 tokens for the tiny model) names its length and the limit; the other
    prompts' work is not lost to an allocation the machine cannot make, and nothing is half-written."""
    from typer.testing import CliRunner

    from polyrise.cli import app

    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": "1", "lang": "en", "instruction": "Hi."}, {"id": "2", "lang": "en", "instruction": "word " * 5000}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "responses.jsonl"
    result = CliRunner().invoke(app, ["generate", str(prompts), "--model", str(tiny_model_dir), "--out", str(out)])
    message = str(result.exception)
    assert result.exit_code == 1 and "exceeds the context of" in message and "(2048 tokens)" in message
    assert "+ 256 to generate" in message and not out.exists()


def test_a_kill_loop_ends_identical_to_an_uninterrupted_run(tmp_path, tiny_model_dir):
    """kill -9 at 4 seeded random moments of a small run (30-80% into the uninterrupted run's duration), then a
    rerun: every JSONL and the weights equal an uninterrupted run's, and so do the logged training losses (the
    stage cache, the generation cache and atomic writes lose nothing)."""
    import hashlib
    import random

    (tmp_path / "ref").mkdir()
    (tmp_path / "killed").mkdir()
    reference = _small(tmp_path / "ref", tiny_model_dir)
    start = time.time()
    assert _start(reference, tmp_path / "ref" / "log").wait() == 0
    duration = time.time() - start
    config = _small(tmp_path / "killed", tiny_model_dir)
    run_dir = load_config(config).run_dir
    rng = random.Random(0)
    moments = []
    for i in range(4):
        proc = _start(config, tmp_path / f"kill{i}")
        moment = rng.uniform(0.3 * duration, 0.8 * duration)
        time.sleep(moment)
        finished = proc.poll() is not None
        proc.kill()
        proc.wait()
        moments.append((round(moment, 1), "finished" if finished else f"{len(_stages(run_dir))} stages done"))
    print(f"\nuninterrupted: {duration:.1f} s; killed at (s, progress): {moments}")
    run_pipeline(load_config(config))

    def artefacts(run_dir: Path) -> dict[str, object]:
        files = [*run_dir.rglob("*.jsonl"), *run_dir.rglob("*.safetensors"), *run_dir.rglob("pairs_stats.json")]
        found: dict[str, object] = {}
        for path in files:
            name = str(path.relative_to(run_dir))
            if path.name == "training_log.jsonl":  # timings differ; the losses must not
                found[name] = [row.get("loss") for row in map(json.loads, path.read_text().splitlines())]
            else:
                found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        return found

    expected = artefacts(load_config(reference).run_dir)
    assert expected and artefacts(run_dir) == expected


# -- 10. model specs: a Hub id or a path -----------------------------------------------------------------------------

HUB_IDS = [
    "Qwen/Qwen2.5-0.5B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen3-0.6B",
    "mistralai/Mistral-7B-Instruct-v0.3", "HuggingFaceTB/SmolLM2-135M-Instruct", "google/gemma-2-2b-it",
    "microsoft/Phi-3.5-mini-instruct", "01-ai/Yi-1.5-6B-Chat", "bigscience/bloomz-560m", "CohereForAI/aya-expanse-8b",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "allenai/OLMo-2-1124-7B-Instruct", "tiiuae/falcon-7b-instruct",
    "openai-community/gpt2", "facebook/opt-125m", "EleutherAI/pythia-70m", "unsloth/Llama-3.2-1B-Instruct",
    "mlx-community/Qwen2.5-0.5B-Instruct-4bit", "TheBloke/Llama-2-7B-Chat-GGUF", "nvidia/Llama-3.1-Nemotron-Nano-8B-v1",
    "Unbabel/TowerInstruct-7B-v0.2", "utter-project/EuroLLM-1.7B-Instruct", "gpt2", "distilgpt2", "t5-small",
    "bert-base-uncased", "Qwen2.5-0.5B-Instruct", "model.v2", "a/b.c",
]  # fmt: skip
MISSING_PATHS = [
    "/nonexistent/model", "./my-model", "../models/x", "~/no-such-model-dir", "runs/demo/iter_0/model", "a/b/c.d",
    "models\\x", "./Qwen2.5-0.5B", "/Qwen/Qwen2.5-0.5B-Instruct",
]  # fmt: skip
NEITHER = ["not a model", "foo--bar", "-x", "x.", ".hidden", "ns/", "a" * 97, "name.git", "a..b"]


@pytest.mark.parametrize("spec", HUB_IDS)
def test_a_hub_id_with_dots_is_a_hub_id_in_every_command(spec, tmp_path, polyrise):
    from polyrise.models import resolve_model
    from polyrise.presets import check_model_spec

    assert resolve_model(spec) == ResolvedModel(spec, spec)  # not looked up: offline
    check_model_spec(spec)
    result = polyrise("init", "--out", str(tmp_path / "c.yaml"), "--model", spec)
    assert result.returncode == 0, result.stderr
    assert load_config(tmp_path / "c.yaml").model.spec == spec
    assert polyrise("models", spec).returncode == 0


@pytest.mark.parametrize("spec", MISSING_PATHS + NEITHER)
def test_a_missing_path_or_a_malformed_id_is_one_error(spec, tmp_path, polyrise):
    result = polyrise("init", "--out", str(tmp_path / "c.yaml"), "--model", spec)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    wanted = "does not exist" if spec in MISSING_PATHS else "not embedded:<name>, a model directory or a Hugging Face"
    assert line.startswith("error: --model") and wanted in line, line
    assert not (tmp_path / "c.yaml").exists()


def test_a_file_is_not_a_model_and_a_local_dir_wins_over_a_hub_id(tmp_path, tiny_model_dir, monkeypatch):
    from polyrise.models import resolve_model

    (tmp_path / "model.gguf").write_text("not a checkpoint")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolyriseError, match=r"^model\.gguf: not a model directory \(a file"):
        resolve_model("model.gguf")
    (tmp_path / "Qwen").mkdir()
    (tmp_path / "Qwen" / "Qwen2.5-0.5B-Instruct").symlink_to(tiny_model_dir)
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct").is_local


def test_an_uncached_hub_id_is_one_error_when_it_loads(tmp_path, polyrise, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "p1", "lang": "en", "instruction": "hi"}) + "\n")
    result = polyrise("generate", str(prompts), "-m", "Qwen/Qwen3-0.6B", "-o", str(tmp_path / "out.jsonl"))
    assert result.returncode == 1 and "polyrise/" not in result.stderr  # (another test's server thread may print)
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot load tokenizer of 'Qwen/Qwen3-0.6B': "), line
    assert not (tmp_path / "out.jsonl").exists()


# -- 11. every name that becomes a file name is one path component ---------------------------------------------------

HOSTILE_NAMES = ["..", "../x", "../../x", "/abs", "/tmp/polyrise-x", "a/b", "a\\b", "a\0b", "", ".", "x/..", "./x"]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("where", ["run name", "evaluation name", "eval --name", "eval --label", "api label", "scores"])
def test_a_hostile_name_is_one_error_and_writes_nothing(tmp_path, polyrise, name, where):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    before = _tree(tmp_path)
    config = work / "config.yaml"
    out = work / "eval"
    mgsm = {"task": "mgsm", "source": "builtin:gsm-symbolic", "limit": 1}
    if where in ("run name", "evaluation name"):
        settings = {"name": name} if where == "run name" else {"evaluation": [{**mgsm, "name": name}]}
        config.write_text(yaml.safe_dump({"output_dir": str(work / "runs"), **settings}))
        before = _tree(tmp_path)
        key = "name" if where == "run name" else "evaluation.0.name"
        with pytest.raises(PolyriseError, match=rf"config\.yaml: {re.escape(key)}: .*not one path component"):
            load_config(config)
        result = polyrise("run", str(config))
    elif where == "api label":
        from polyrise import api

        with pytest.raises(PolyriseError, match=r"^--label .*not one path component"):
            api.evaluate(mgsm, "embedded:smollm2-135m-instruct", langs=["en"], out=out, label=name)
        result = polyrise("eval", "--task", "mgsm", "--limit", "1", "--langs", "en", "-o", str(out), "--label", name)
    elif where == "scores":
        out.mkdir()
        (out / "scores.json").write_text(json.dumps({"mgsm": {name: {"en": {"accuracy": 1.0}}}}))
        before = _tree(tmp_path)
        result = polyrise("report", str(out))
    else:
        option = where.removeprefix("eval ")
        result = polyrise("eval", "--task", "mgsm", "--limit", "1", "--langs", "en", "-o", str(out), option, name)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "not one path component" in line, line
    assert _tree(tmp_path) == before


# -- 12. the run lock follows no link --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["a file", "a missing file", "a dangling dir link"])
def test_the_run_lock_follows_no_symlink(tmp_path, tiny_model_dir, target):
    config = load_config(_small(tmp_path, tiny_model_dir))
    config.run_dir.mkdir(parents=True)
    victim = tmp_path / "precious.txt"
    if target == "a file":
        victim.write_text("keep me\n")
    elif target == "a dangling dir link":
        victim = tmp_path / "gone" / "x"
    (config.run_dir / ".run.lock").symlink_to(victim)
    with pytest.raises(PolyriseError, match=r"\.run\.lock: is a symbolic link; polyrise does not follow it"):
        Runner(config, Console(file=io.StringIO())).__enter__()
    assert (victim.read_text() == "keep me\n") if target == "a file" else not victim.exists()
    assert not (config.run_dir / "config.yaml").exists()


# -- 13. `train -o` never overwrites a model it was not told to ----------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "case", ["the model", "the model/", "inside the model", "a link to the model", "the model, relative", "not empty",
             "a file", "the model with --force", "inside the model with --force"]
)  # fmt: skip
def test_train_refuses_an_out_that_holds_a_model(tmp_path, tiny_model_dir, polyrise, case):
    import shutil

    model = tmp_path / "m0"
    shutil.copytree(tiny_model_dir, model)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("a file")
    (tmp_path / "link").symlink_to(model)
    out = {
        "the model": str(model), "the model/": f"{model}/", "inside the model": str(model / "sub"),
        "a link to the model": str(tmp_path / "link"), "the model, relative": "m0", "not empty": str(other),
        "a file": str(tmp_path / "file"),
    }.get(case.removesuffix(" with --force"))  # fmt: skip
    data = tmp_path / "pairs.jsonl"
    data.write_text("")
    before = _snapshot(tmp_path)
    args = ["train", str(data), "-m", str(model), "-o", out] + (["--force"] if "--force" in case else [])
    result = polyrise(*args, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    wanted = {"not empty": "exists and is not empty; pass --force", "a file": "exists and is not a directory"}
    assert line.startswith(f"error: --out {Path(out)}: ") and wanted.get(case, "is the input model") in line, line
    assert _snapshot(tmp_path) == before


# -- 14. duplicate ids in the steps' inputs --------------------------------------------------------------------------

PROMPT = {"id": "p1", "lang": "en", "instruction": "Say hi."}
RESPONSE = {"id": "p1", "lang": "en", "prompt": "Say hi.", "output": "Hi there, how are you today?"}
TRANSLATION = {"id": "p1", "kind": "response", "src_lang": "en", "lang": "es", "source": "Hi", "output": "Hola"}
TRANSLATION["raw"] = "Hola"


@pytest.mark.parametrize(
    ("command", "file", "rows"),
    [
        ("generate", "prompts", [PROMPT, {**PROMPT, "instruction": "Say bye."}]),
        ("generate", "prompts", [PROMPT, {**PROMPT, "lang": "es"}, {**PROMPT, "id": "p2"}, {**PROMPT, "lang": "es"}]),
        ("translate", "prompts", [PROMPT, PROMPT]),
        ("translate", "responses", [RESPONSE, {**RESPONSE, "output": "other"}]),
        ("pairs", "prompts", [PROMPT, PROMPT]),
        ("pairs", "responses", [RESPONSE, {**RESPONSE, "lang": "es"}, {**RESPONSE, "lang": "es", "output": "x"}]),
        ("pairs", "translations", [TRANSLATION, {**TRANSLATION, "output": "Buenas"}]),
    ],
)
def test_a_duplicate_id_in_a_steps_input_is_one_error(tmp_path, tiny_model_dir, polyrise, command, file, rows):
    files = {"prompts": [PROMPT], "responses": [RESPONSE, {**RESPONSE, "lang": "es"}], "translations": [TRANSLATION]}
    files[file] = rows
    for name, content in files.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in content))
    out = tmp_path / "out" / "x.jsonl"
    given = str(tmp_path / f"{file}.jsonl")
    before = _snapshot(tmp_path)
    args = {
        "generate": ["generate", given, "-m", str(tiny_model_dir), "-o", str(out)],
        "translate": ["translate", given, "--to", "es,de", "-m", str(tiny_model_dir), "-o", str(out)],
        "pairs": ["pairs", "--languages", "es", "--out", str(out)]
        + [f"--{name}={tmp_path / f'{name}.jsonl'}" for name in files],
    }[command]
    result = polyrise(*args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    dup = next(r for i, r in enumerate(rows) if r in rows[:i] or any(
        all(r[k] == e[k] for k in ("id", "lang", *(("kind", "src_lang") if file == "translations" else ())))
        for e in rows[:i]
    ))  # fmt: skip
    assert line.startswith(f"error: {given}: duplicate id 'p1' (") and f"lang {dup['lang']!r}" in line, line
    assert _snapshot(tmp_path) == before  # no output, no cache


# -- 15. --cache naming a file that is not a cache --------------------------------------------------------------------


def _other_sqlite(path: Path) -> None:
    import sqlite3

    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('mine')")


NOT_CACHES = {
    "text": lambda p: p.write_text("my notes, not a database\n"),
    "json": lambda p: p.write_text(json.dumps({"a": 1})),
    "binary": lambda p: p.write_bytes(bytes(range(256)) * 8),
    "half a header": lambda p: p.write_bytes(b"SQLite format"),
    "another sqlite db": _other_sqlite,
    "a sqlite header then garbage": lambda p: p.write_bytes(b"SQLite format 3\0" + b"\xff" * 5000),
}


@pytest.mark.parametrize("kind", list(NOT_CACHES))
def test_a_file_that_is_not_a_cache_is_never_moved(tmp_path, tiny_model_dir, polyrise, kind):
    from polyrise.generation.cache import GenerationCache

    path = tmp_path / "notes.db"
    NOT_CACHES[kind](path)
    before = _snapshot(tmp_path)
    with pytest.raises(PolyriseError, match=rf"^{re.escape(str(path))}: not a polyrise generation cache"):
        GenerationCache(path)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps(PROMPT) + "\n")
    before = _snapshot(tmp_path)
    out = tmp_path / "out.jsonl"
    result = polyrise("generate", str(prompts), "-m", str(tiny_model_dir), "-o", str(out), "--cache", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: not a polyrise generation cache"), line
    assert _snapshot(tmp_path) == before


def test_a_cache_another_process_is_creating_is_taken_as_polyrises(tmp_path):
    """Between SQLite writing a new file's header and polyrise marking it (several `--shard` processes opening one
    new cache at once), the file is an empty database, perhaps write-locked: the opener waits out the lock and
    takes it as a cache, never as a foreign file."""
    import sqlite3
    import threading

    from polyrise.generation.cache import APPLICATION_ID, GenerationCache

    path = tmp_path / "c.sqlite"
    creating = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    creating.execute("PRAGMA journal_mode=WAL")  # the header is on disk; no application id, no table yet
    creating.execute("BEGIN EXCLUSIVE")
    creating.execute("CREATE TABLE outputs (key TEXT PRIMARY KEY, output TEXT NOT NULL)")
    threading.Timer(0.5, lambda: (creating.execute("COMMIT"), creating.close())).start()
    cache = GenerationCache(path)  # waits for the commit above
    cache.close()
    assert int.from_bytes(path.read_bytes()[68:72], "big") == APPLICATION_ID
    empty = tmp_path / "empty.sqlite"
    with closing(sqlite3.connect(empty)) as db:
        db.execute("PRAGMA journal_mode=WAL")
    GenerationCache(empty).close()


def test_a_cache_is_marked_as_polyrises_and_an_old_one_is_still_recognised(tmp_path):
    import sqlite3

    from polyrise.generation.cache import APPLICATION_ID, GenerationCache

    path = tmp_path / "c.sqlite"
    GenerationCache(path).close()
    assert int.from_bytes(path.read_bytes()[68:72], "big") == APPLICATION_ID
    old = tmp_path / "old.sqlite"  # made before the application id: its table says whose it is
    with closing(sqlite3.connect(old)) as db, db:
        db.execute("CREATE TABLE outputs (key TEXT PRIMARY KEY, output TEXT NOT NULL)")
        db.execute("INSERT INTO outputs VALUES ('k', 'v')")
    assert GenerationCache(old).get_many(["k"]) == {"k": "v"}


# -- 16. `~` in a path setting is the home directory -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("output_dir", "~/runs"),
        ("training.accelerate_config", "~/accelerate.yaml"),
        ("filters.translation_task_ids", "~/ids.jsonl"),
        ("prompts.source", "~/prompts.jsonl"),
        ("evaluation", "~/mgsm_{lang}.jsonl"),
    ],
)
def test_a_tilde_in_a_path_setting_is_the_home_directory(tmp_path, monkeypatch, key, value):
    from polyrise.io import lang_paths

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    data: dict = {"languages": ["es"]}
    if key == "evaluation":
        data["evaluation"] = [{"task": "mgsm", "source": value}]
    else:
        section, _, leaf = key.rpartition(".")
        (data.setdefault(section, {}) if section else data)[leaf] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    if key == "output_dir":
        assert config.run_dir == home / "runs" / "run"
    elif key in ("training.accelerate_config", "filters.translation_task_ids"):
        section, leaf = key.split(".")
        assert getattr(getattr(config, section), leaf) == home / value.removeprefix("~/")
    else:
        source = config.prompts.source if key == "prompts.source" else config.evaluation[0].source
        assert [p for _, p in lang_paths(source, ["en"])] == [home / value.removeprefix("~/").replace("{lang}", "en")]
    assert not (tmp_path / "~").exists()


# -- 17. a full or read-only disk, the umask, crash logs ---------------------------------------------------------------


@pytest.fixture(params=["full", "read-only"])
def bad_disk(request, tmp_path) -> Iterator[Path]:
    """A 64 KiB tmpfs, filled up or mounted read-only (tests run as root here, so chmod would not stop a write);
    skipped where mounting is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    options = "size=64k" + (",ro" if request.param == "read-only" else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        if request.param == "full":
            with contextlib.suppress(OSError), (disk / "filler").open("wb") as fh:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        yield disk
    finally:  # lazily when a file there is still open (a failed command's): never left mounted
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)], check=True)


def _files(root: Path) -> dict[str, int]:
    """Every file with content under `root` (an empty one, e.g. a lock file, holds nothing half-written)."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file() and p.stat().st_size}


WRITERS = ["init", "generate", "translate", "pairs", "score", "eval", "report", "export", "run", "train"]


@pytest.mark.parametrize("command", WRITERS)
def test_a_full_or_read_only_disk_is_one_error_naming_the_file(tmp_path, tiny_model_dir, polyrise, bad_disk, command):
    from test_export import _run_dir

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in (PROMPT, {**PROMPT, "lang": "es"})))
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps(r) + "\n" for r in (RESPONSE, {**RESPONSE, "lang": "es"})))
    translations = tmp_path / "translations.jsonl"
    translations.write_text(json.dumps(TRANSLATION) + "\n")
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(json.dumps({"id": "1", "lang": "en", "output": "The answer is 5.", "gold": "5"}) + "\n")
    scored = tmp_path / "scored"
    scored.mkdir()
    (scored / "scores.json").write_text(json.dumps({"mgsm": {"M0": {"en": {"accuracy": 1.0, "n": 1}}}}))
    model, out = str(tiny_model_dir), bad_disk / "out"
    args = {
        "init": ["init", "--out", str(bad_disk / "c.yaml")],
        "generate": ["generate", str(prompts), "-m", model, "-o", str(out / "r.jsonl")],
        "translate": ["translate", str(responses), "--to", "es", "-m", model, "-o", str(out / "t.jsonl")],
        "pairs": ["pairs", f"--prompts={prompts}", f"--responses={responses}", f"--translations={translations}",
                  "--languages", "es", "--out", str(out / "pairs.jsonl")],
        "score": ["score", "mgsm", str(predictions), "--out", str(out)],
        "eval": ["eval", "--task", "mgsm", "--limit", "1", "--langs", "en", "-m", model, "-o", str(out)],
        "report": ["report", str(scored)],
        "export": ["export", str(tmp_path / "runs" / "tiny"), "--iteration", "1", "--out", str(out)],
        "run": ["run"],
        "train": ["train", str(tmp_path / "pairs.jsonl"), "-m", model, "-o", str(out / "model")],
    }[command]  # fmt: skip
    if command == "report":  # the run dir itself is on the bad disk
        args = ["report", str(bad_disk / "scored")]
        if (bad_disk / "filler").exists():
            (bad_disk / "filler").unlink()
            shutil.copytree(scored, bad_disk / "scored")
            with contextlib.suppress(OSError), (bad_disk / "filler").open("wb") as fh:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        else:  # put the run there, then make the disk read-only again
            subprocess.run(["mount", "-o", "remount,rw", str(bad_disk)], check=True)
            shutil.copytree(scored, bad_disk / "scored")
            subprocess.run(["mount", "-o", "remount,ro", str(bad_disk)], check=True)
    if command == "export":
        _run_dir(tmp_path)
    if command == "run":
        args.append(str(_small(tmp_path, tiny_model_dir, output_dir=str(out))))
    if command == "train":
        write_jsonl(tmp_path / "pairs.jsonl", [PreferencePair(id="p", lang="es", via="es", prompt="a", chosen="b",
                                                             rejected="c")])  # fmt: skip
    before = _files(bad_disk)
    result = polyrise(*args)
    assert result.returncode == 1, (result.stdout, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {bad_disk}") or line.startswith(f"error: --out {bad_disk}"), line
    assert re.search(r"No space left|Read-only file system|disk is full|readonly database", line), line
    assert _files(bad_disk) == before  # nothing half-written


def test_a_response_without_its_prompt_is_one_error(tmp_path, polyrise):
    files = {"prompts": [PROMPT], "responses": [RESPONSE, {**RESPONSE, "lang": "es"}], "translations": [TRANSLATION]}
    for name, content in files.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in content))
    args = [f"--{name}={tmp_path / f'{name}.jsonl'}" for name in files]
    result = polyrise("pairs", "--languages", "es", "--out", str(tmp_path / "out" / "pairs.jsonl"), *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'responses.jsonl'}: response 'p1' in 'es' has no prompt in {tmp_path / 'prompts.jsonl'}"
    )
    assert not (tmp_path / "out" / "pairs.jsonl").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
def test_atomic_writes_get_the_mode_of_a_plain_write(tmp_path, umask):
    from polyrise.io import atomic_files, write_json, write_jsonl

    old = os.umask(umask)
    try:
        (tmp_path / "plain").write_text("x")
        write_json(tmp_path / "a.json", {"a": 1})
        write_jsonl(tmp_path / "b.jsonl", [{"a": 1}])
        with atomic_files(tmp_path / "c.md", tmp_path / "c.html") as (md, html):
            md.write("m")
            html.write("h")
    finally:
        os.umask(old)
    plain = (tmp_path / "plain").stat().st_mode & 0o777
    assert plain == 0o666 & ~umask
    for name in ("a.json", "b.jsonl", "c.md", "c.html"):
        assert (tmp_path / name).stat().st_mode & 0o777 == plain, name


def test_a_failed_write_of_two_files_replaces_neither(tmp_path):
    from polyrise.io import atomic_files

    md, html = tmp_path / "report.md", tmp_path / "report.html"
    md.write_text("old md")
    html.write_text("old html")
    with pytest.raises(RuntimeError), atomic_files(md, html) as (a, _html):
        a.write("new md")
        raise RuntimeError("the html could not be rendered")
    assert (md.read_text(), html.read_text()) == ("old md", "old html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]


@pytest.mark.parametrize("folder", ["fresh", "a file in the way", "someone else's", "a link"])
def test_a_crash_log_is_private_and_its_absence_no_second_crash(tmp_path, monkeypatch, capsys, folder):
    import tempfile

    from polyrise import cli

    def broken() -> None:
        raise ValueError("prompt text inside")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.delenv("POLYRISE_TRACEBACK", raising=False)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    logs = tmp_path / f"polyrise-logs-{os.getuid()}"
    if folder == "a file in the way":
        logs.write_text("not a folder")
    elif folder == "someone else's":
        logs.mkdir(mode=0o777)
        logs.chmod(0o777)
    elif folder == "a link":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        logs.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert exit_.value.code == 1 and line.startswith("error: unexpected ValueError: prompt text inside")
    if folder == "fresh":
        log = Path(line.split("the traceback is in ")[1].split(";")[0])
        assert log.parent == logs and logs.stat().st_mode & 0o777 == 0o700 and log.stat().st_mode & 0o777 == 0o600
        assert "prompt text inside" in log.read_text()
    else:
        assert "POLYRISE_TRACEBACK=1" in line and not list((tmp_path / "elsewhere").glob("*"))
