"""Shared fixtures: the real SmolLM2 tokenizer and a tiny random Llama built from a config."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from engines import FakeServer

from polyrise.models import resolve_model

EMBEDDED_SPEC = "embedded:smollm2-135m-instruct"


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The converted embedded checkpoint (converted once per machine into the polyrise cache)."""
    return Path(resolve_model(EMBEDDED_SPEC).path)


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer random Llama with the real tokenizer and chat template, saved as a local model dir."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def server() -> Iterator[FakeServer]:
    """A fake OpenAI-compatible server on 127.0.0.1 (see tests/engines.py)."""
    srv = FakeServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def polyrise(capsys, monkeypatch) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`polyrise ARGS` in this process, through `polyrise.cli.main` (the error boundary: `error:` lines, exit
    codes), its stdout and stderr captured; `cwd` runs it in that directory."""
    from polyrise.cli import main

    def invoke(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()  # what came before is not this command's
        with monkeypatch.context() as patch:
            patch.setattr(sys, "argv", ["polyrise", *args])
            if cwd is not None:
                patch.chdir(cwd)
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["polyrise", *args], code, out, err)

    return invoke


@pytest.fixture(scope="session")
def small_sandbox(tmp_path_factory) -> tuple[Path, Path]:
    """A small sandbox build (about 15 s on 2 CPU cores) whose M0 writes words of the task, with its first 12 train
    prompts in English and rendered in each clone (a `{lang}` prompt source: no self-translation, which this model
    cannot do yet). Returns (the sandbox dir, the prompts path with `{lang}`)."""
    import json

    from polyrise.sandbox import DataMix, ModelSize, PretrainSettings, Sizes, build_sandbox
    from polyrise.sandbox.world import make_clones, render

    root = tmp_path_factory.mktemp("small-sandbox")
    box = root / "sandbox-seed0"
    build_sandbox(
        box,
        seed=0,
        progress=False,
        mix=DataMix(english_task=500, clone_task=150, translation=200),
        model_size=ModelSize(hidden=64, layers=2, heads=4, intermediate=128),
        train=PretrainSettings(epochs=2, batch_size=16),
        sizes=Sizes(eval=20, translation_test=10, prompts=24),
    )
    clones = make_clones()
    rows = [json.loads(line) for line in (box / "prompts" / "train.jsonl").read_text().splitlines()][:12]
    for lang in ["en", *clones]:
        texts = [{**row, "instruction": render(row["instruction"], lang, clones)} for row in rows]
        (root / f"{lang}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in texts))
    return box, root / "{lang}.jsonl"
