"""`polyrise export`: an iteration's pairs as a `datasets` dataset in TRL's format, saved to disk or pushed to the
Hub (the push recorded, never sent), and one error for what is missing."""

from __future__ import annotations

import math
import re
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
from typer.testing import CliRunner

from polyrise.cli import app
from polyrise.errors import PolyriseError
from polyrise.exporting import export_pairs
from polyrise.io import write_jsonl
from polyrise.records import PreferencePair, QuestionPair

PAIRS = [
    PreferencePair(id="p0", lang="es", via="es", prompt="¿Qué es el sol?", chosen="Una estrella.", rejected="Sun."),
    PreferencePair(id="p0", lang="en", via="es", prompt="What is the sun?", chosen="A star.", rejected="Una star."),
    PreferencePair(id="p1", lang="de", via="de", prompt="Was ist Wasser?", chosen="H₂O.", rejected="Water."),
]


def _run_dir(tmp_path: Path, iteration: int = 1) -> Path:
    run_dir = tmp_path / "runs" / "tiny"
    write_jsonl(run_dir / f"iter_{iteration}" / "pairs.jsonl", PAIRS)
    return run_dir


def test_save_to_disk_round_trips_every_row_in_trls_format(tmp_path, tokenizer):
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    run_dir, out = _run_dir(tmp_path), tmp_path / "dataset"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--iteration", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    loaded = datasets.load_from_disk(str(out))
    assert loaded.column_names == ["prompt", "chosen", "rejected", "id", "lang", "via"]
    assert loaded.to_list() == [
        {
            "prompt": [{"role": "user", "content": p.prompt}],
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
            "id": p.id,
            "lang": p.lang,
            "via": p.via,
        }
        for p in PAIRS
    ]
    # what DPOTrainer does with a row: conversational, so the chat template turns it into the three texts
    assert is_conversational(loaded[0])
    texts = maybe_apply_chat_template(loaded[0], tokenizer)
    assert "¿Qué es el sol?" in texts["prompt"] and texts["chosen"].startswith("Una estrella.")
    assert not list(out.parent.glob(".*.tmp"))

    # an existing --out is replaced only with --force
    with pytest.raises(PolyriseError, match=r"dataset exists; pass --force"):
        export_pairs(run_dir, 1, out)
    write_jsonl(run_dir / "iter_1" / "pairs.jsonl", PAIRS[:1])
    export_pairs(run_dir, 1, out, force=True)
    assert datasets.load_from_disk(str(out)).num_rows == 1


def test_trls_dpo_trainer_takes_the_exported_dataset_as_it_is(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    out = tmp_path / "dataset"
    export_pairs(_run_dir(tmp_path), 1, out)
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        max_steps=1,
        per_device_train_batch_size=3,
        max_length=64,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=datasets.load_from_disk(str(out)),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    result = trainer.train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)
    assert len(trainer.train_dataset) == len(PAIRS)  # every row tokenized (chat template applied), none dropped


def test_question_pairs_export_as_prompt_completion(tmp_path):
    pairs = [QuestionPair(id="q1", lang="zh", target="en", prompt="水是什么", completion="What is water?")]
    write_jsonl(tmp_path / "run" / "iter_0" / "question_pairs.jsonl", pairs)
    dataset = export_pairs(tmp_path / "run", 0, tmp_path / "out")
    assert datasets.load_from_disk(str(tmp_path / "out")).to_list() == dataset.to_list()
    assert dataset.to_list() == [
        {
            "prompt": [{"role": "user", "content": "水是什么"}],
            "completion": [{"role": "assistant", "content": "What is water?"}],
            "id": "q1",
            "lang": "zh",
            "target": "en",
        }
    ]


def test_push_to_hub_gets_the_repo_the_private_flag_the_token_and_the_rows(tmp_path, monkeypatch):
    pushed = []

    def record(self, repo_id, **kwargs):
        pushed.append((repo_id, kwargs, self.to_list()))

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", record)
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", lambda self, token: {"name": "someone"})
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    export_pairs(_run_dir(tmp_path), 1, push_to_hub="someone/lidr-pairs", private=True)
    [(repo_id, kwargs, rows)] = pushed
    assert repo_id == "someone/lidr-pairs"
    assert kwargs == {"private": True, "token": "hf_from_env"}
    assert [(r["id"], r["lang"], r["chosen"][0]["content"]) for r in rows] == [(p.id, p.lang, p.chosen) for p in PAIRS]

    # no token: one error before any work (no --out written, nothing pushed)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    out = tmp_path / "out"
    with pytest.raises(PolyriseError, match=r"--push-to-hub needs a Hugging Face token .* HF_TOKEN"):
        export_pairs(_run_dir(tmp_path), 1, out, push_to_hub="someone/lidr-pairs")
    with pytest.raises(PolyriseError, match=r"--push-to-hub 'not a repo': not a repo id"):
        export_pairs(_run_dir(tmp_path), 1, out, push_to_hub="not a repo")
    assert len(pushed) == 1 and not out.exists()


def test_push_to_hub_without_the_hub_is_one_error_before_any_work(tmp_path, monkeypatch, polyrise):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as without a network
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    out = tmp_path / "out"
    result = polyrise("export", str(_run_dir(tmp_path)), "--push-to-hub", "someone/pairs", "--out", str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: --push-to-hub someone/pairs: cannot reach the Hugging Face Hub")
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_run_without_that_iterations_pairs_is_one_error_naming_the_file(tmp_path, polyrise):
    run_dir = _run_dir(tmp_path, iteration=0)
    result = polyrise("export", str(run_dir), "--iteration", "2", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {run_dir / 'iter_2' / 'pairs.jsonl'}: no such file")
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
    with pytest.raises(PolyriseError, match=r"nothing to export to"):
        export_pairs(run_dir, 0)


@pytest.mark.parametrize(
    "where", ["the run", "inside the run", "iter_1", "the run's parent", "the working directory", "a link to the run"]
)
@pytest.mark.parametrize("force", [False, True])
def test_an_out_that_is_holds_or_lies_inside_the_run_is_refused(tmp_path, monkeypatch, where, force):
    run_dir = _run_dir(tmp_path)
    (tmp_path / "link").symlink_to(run_dir)
    monkeypatch.chdir(tmp_path)
    out = {
        "the run": run_dir, "inside the run": run_dir / "export", "iter_1": run_dir / "iter_1",
        "the run's parent": run_dir.parent, "the working directory": Path("."), "a link to the run": tmp_path / "link",
    }[where]  # fmt: skip
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(PolyriseError, match=rf"^--out {re.escape(str(out))}: (is the working|is, holds or lies)"):
        export_pairs(run_dir, 1, out, force=force)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_an_export_killed_by_a_signal_leaves_no_partial_dataset_for_long(tmp_path):
    import subprocess
    import sys

    run_dir, out = _run_dir(tmp_path), tmp_path / "dataset"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".dataset.{int(dead.stdout)}.tmp"  # what SIGKILL during save_to_disk leaves
    stale.mkdir()
    (stale / "data-00000-of-00001.arrow").write_bytes(b"half")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = tmp_path / f".dataset.{sleeper.pid}.tmp"  # another export still writing
        other = tmp_path / ".other.123.tmp"
        for keep in (alive, other):
            keep.mkdir()
        export_pairs(run_dir, 1, out)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not stale.exists() and alive.exists() and other.exists()
    assert datasets.load_from_disk(str(out)).num_rows == len(PAIRS)
