"""The CLI: bad input gives one clear line on stderr, exit code 1, and no output file."""

from __future__ import annotations

import json
import subprocess
import sys


def polyrise(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from polyrise.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_unknown_config_key_exits_1_with_one_message(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: x\nlanguages: [es]\ngeneration:\n  batch: 4\n")
    result = polyrise("run", str(cfg))
    assert result.returncode == 1
    assert "run.yaml: generation.batch: Extra inputs are not permitted" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_malformed_jsonl_names_file_and_line_and_writes_nothing(tmp_path):
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


def test_unknown_language_and_missing_model(tmp_path):
    (tmp_path / "r.jsonl").write_text(json.dumps({"id": "1", "lang": "en", "output": "Hi"}) + "\n")
    result = polyrise("translate", str(tmp_path / "r.jsonl"), "--to", "es,xx", "-m", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert "unknown language code 'xx'; known codes:" in result.stderr
    result = polyrise("translate", str(tmp_path / "r.jsonl"), "--to", "es", "-m", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_generate_through_an_openai_server_and_engine_flag_errors(tmp_path, server):
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
    assert unknown.returncode == 1 and "--engine: Input should be 'hf', 'vllm' or 'openai'" in unknown.stderr
