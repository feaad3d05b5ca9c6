"""`--shard K/N`: N processes answer their part of a prompt set into one cache; a run without --shard merges."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polyrise.cli import app
from polyrise.generation.cache import GenerationCache

PROMPTS = [
    ("en", "Name three colours."),
    ("en", "What is two plus two? Answer with one word, then explain your reasoning in a sentence."),
    ("es", "Di hola."),
    ("es", "Escribe una frase sobre el mar y otra sobre la montaña."),
    ("de", "Wie spät ist es?"),
    ("de", "Nenne drei Tiere, die im Wald leben, und sage, was sie fressen."),
    ("fr", "Bonjour !"),
]


def polyrise(*args: str) -> subprocess.Popen[str]:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "from polyrise.cli import main; main()", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _write_rows(path: Path, worker: int, start: multiprocessing.synchronize.Barrier) -> None:
    start.wait()
    cache = GenerationCache(path)
    for i in range(20):
        cache.put_many({f"{worker}-{i}-{j}": "x" * 100 for j in range(10)})
        cache.get_many(f"{(worker + 1) % 4}-{i}-{j}" for j in range(10))
    cache.close()


def test_processes_opening_and_writing_one_new_cache_at_once_all_succeed(tmp_path):
    """SQLite refuses the switch to WAL at once, without its busy timeout, while another process creates the file:
    the cache retries it (without the retry, most runs of this test failed with `database is locked`)."""
    context = multiprocessing.get_context("fork")
    for trial in range(30):
        path, start = tmp_path / f"c{trial}.sqlite", context.Barrier(4)
        workers = [context.Process(target=_write_rows, args=(path, w, start)) for w in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [worker.exitcode for worker in workers] == [0] * 4
        assert len(GenerationCache(path)) == 4 * 20 * 10


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = [{"id": f"p{i}", "lang": lang, "instruction": text} for i, (lang, text) in enumerate(PROMPTS)]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def test_two_shard_processes_fill_one_cache_and_a_merge_run_only_reads_it(tmp_path, tiny_model_dir, prompts):
    common = ["-m", str(tiny_model_dir), "--max-new-tokens", "12", "--batch-size", "2"]
    merged, cache = tmp_path / "merged" / "responses.jsonl", tmp_path / "merged" / "shared.sqlite"
    shards = [
        polyrise("generate", str(prompts), *common, "-o", str(merged), "--cache", str(cache), "--shard", f"{k}/2")
        for k in range(2)
    ]  # both running at once, writing the same SQLite file
    for shard, k in zip(shards, range(2), strict=True):
        stdout, stderr = shard.communicate(timeout=300)
        assert shard.returncode == 0, stderr
        assert f"shard {k}/2: {4 - k} generated into {cache}" in stdout
    assert not merged.exists()  # a shard writes only the cache
    assert len(GenerationCache(cache)) == len(PROMPTS)

    said = invoke("generate", str(prompts), *common, "-o", str(merged), "--cache", str(cache))
    assert f"wrote {len(PROMPTS)} responses to {merged} ({len(PROMPTS)} from cache)" in said
    assert len(GenerationCache(cache)) == len(PROMPTS)  # the merge generated nothing

    single = tmp_path / "single" / "responses.jsonl"
    invoke("generate", str(prompts), *common, "-o", str(single))
    assert merged.read_text() == single.read_text()  # greedy: the same answers as one process


def test_translate_shards_merge_into_the_single_run_translations(tmp_path, tiny_model_dir, prompts):
    common = [str(prompts), "--to", "en,es", "-m", str(tiny_model_dir), "--max-new-tokens", "8", "--batch-size", "2"]
    merged = tmp_path / "merged" / "translations.jsonl"
    for k, part in enumerate([4, 3, 3]):  # 10 jobs: every row into each of en, es but its own language
        assert f"shard {k}/3: {part} generated" in invoke("translate", *common, "-o", str(merged), "--shard", f"{k}/3")
    assert not merged.exists()
    assert "10 from cache" in invoke("translate", *common, "-o", str(merged))
    single = tmp_path / "single" / "translations.jsonl"
    invoke("translate", *common, "-o", str(single))
    assert merged.read_text() == single.read_text()


@pytest.mark.parametrize("value", ["2/2", "3/2", "0/0", "x", "1", "-1/2", "1/2/3", "½/2"])
def test_a_bad_shard_is_one_error_naming_the_option_before_any_work(tmp_path, prompts, value):
    args = ["generate", str(prompts), "-m", str(tmp_path / "no-model"), "-o", str(tmp_path / "out" / "r.jsonl")]
    result = CliRunner().invoke(app, [*args, "--shard", value])
    assert result.exit_code == 1
    assert str(result.exception) == f"--shard {value}: expected K/N with 0 <= K < N, e.g. --shard 0/2 and --shard 1/2"
    assert not (tmp_path / "out").exists()  # refused before the model, the prompts or --out were touched


def test_a_bad_shard_on_the_command_line_is_one_line_and_exit_1(tmp_path, prompts):
    shard = polyrise("translate", str(prompts), "--to", "es", "--shard", "3/2")
    _, stderr = shard.communicate(timeout=120)
    assert shard.returncode == 1 and "Traceback" not in stderr
    assert stderr.strip() == "error: --shard 3/2: expected K/N with 0 <= K < N, e.g. --shard 0/2 and --shard 1/2"
