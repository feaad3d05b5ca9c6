"""Reference likelihood (`polyrise eval --task reflik`): per-token NLL of reference answers per language."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from polyrise.errors import PolyriseError
from polyrise.evaluation.judge import load_alpaca_eval_outputs
from polyrise.evaluation.reflik import ReferenceNLL, reference_nll, reflik_scores
from polyrise.generation import ChatRequest, Generator
from polyrise.generation.cache import GenerationCache
from polyrise.generation.hf import HFEngine
from polyrise.models import resolve_model
from polyrise.records import Response
from polyrise.stats import resample_indices

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

REFS = [
    Response(id="1", lang="en", prompt="Name a colour.", output="Blue is a colour of the sky and the sea."),
    Response(id="2", lang="en", prompt="Say hi.", output="Hi!"),
    Response(id="1", lang="de", prompt="Nenne eine Farbe.", output="Blau ist die Farbe des Himmels."),
]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFEngine(resolve_model(str(tiny_model_dir)), batch_size=2)


def _unbatched_nll(engine, ref: Response, max_tokens: int) -> tuple[float, int]:
    """The answer's NLL from one unpadded forward pass, the straightforward way."""
    tok = engine.tokenizer
    context = tok(engine.render(ChatRequest.user(ref.prompt)), add_special_tokens=False)["input_ids"]
    answer = tok(ref.output, add_special_tokens=False)["input_ids"][:max_tokens]
    ids = torch.tensor([context + answer])
    with torch.no_grad():
        logprobs = torch.log_softmax(engine.model(input_ids=ids).logits[0].float(), -1)
    nll = -sum(logprobs[len(context) + i - 1, t].item() for i, t in enumerate(answer))
    return nll, len(answer)


def test_batched_scores_equal_unpadded_forward_passes(engine, tmp_path):
    rows = reference_nll(Generator(engine, GenerationCache(tmp_path / "c.sqlite")), REFS, max_answer_tokens=6)
    for ref, row in zip(REFS, rows, strict=True):
        nll, n = _unbatched_nll(engine, ref, 6)
        assert (row.id, row.lang, row.tokens) == (ref.id, ref.lang, n)
        assert row.nll == pytest.approx(nll, rel=1e-4)
    assert rows[1].tokens < 6 == rows[0].tokens  # "Hi!" is shorter than the cut; the others are cut at 6


def test_cache_serves_a_rerun_and_keys_on_the_truncation(engine, tmp_path, monkeypatch):
    cache = GenerationCache(tmp_path / "c.sqlite")
    first = reference_nll(Generator(engine, cache), REFS, 6)
    assert len(cache) == 3

    def boom(*args, **kwargs):
        raise AssertionError("the model was called although every answer was cached")

    monkeypatch.setattr(engine, "loglikelihood", boom)
    assert reference_nll(Generator(engine, cache), REFS, 6) == first
    with pytest.raises(AssertionError, match="model was called"):
        reference_nll(Generator(engine, cache), REFS, 7)  # another truncation is another key


def test_scores_pool_tokens_per_language():
    rows = [
        ReferenceNLL(id="1", lang="en", nll=6.0, tokens=3),
        ReferenceNLL(id="2", lang="en", nll=2.0, tokens=1),
        ReferenceNLL(id="1", lang="de", nll=9.0, tokens=3),
    ]
    scores = reflik_scores(rows)
    en = scores["en"]
    assert (en["nll"], en["n"], en["tokens"]) == (2.0, 2, 4) and en["ppl"] == pytest.approx(math.e**2)
    # resamples of the two answers pool 6/3 = 2 (either alone, or both: 8/4), so the interval is the point
    assert en["nll_ci_low"] == en["nll_ci_high"] == 2.0
    assert en["ppl_ci_low"] == pytest.approx(math.e**2) and en["ppl_ci_high"] == pytest.approx(math.e**2)
    assert scores["de"]["nll"] == 3.0


def test_nll_interval_resamples_answers_and_pools_their_tokens():
    rows = [ReferenceNLL(id=str(i), lang="en", nll=float(i + 1), tokens=i % 3 + 1) for i in range(12)]
    scores = reflik_scores(rows, seed=5)["en"]
    nll, tokens = np.array([r.nll for r in rows]), np.array([r.tokens for r in rows])
    pooled = [nll[i].sum() / tokens[i].sum() for i in resample_indices(len(rows), 5, "en")]  # keyed by the language
    assert (scores["nll_ci_low"], scores["nll_ci_high"]) == pytest.approx(tuple(np.percentile(pooled, [2.5, 97.5])))
    assert scores["nll"] == pytest.approx(nll.sum() / tokens.sum())  # pooled, not the mean of the answers' ratios
    assert scores["nll_ci_low"] < scores["nll"] < scores["nll_ci_high"]
    assert scores["ppl_ci_low"] < scores["ppl"] < scores["ppl_ci_high"]


def test_a_chat_cannot_be_scored_through_an_openai_server_and_answers_are_nonempty(engine, tmp_path, server):
    from polyrise.generation.openai import OpenAIEngine
    from polyrise.settings import OpenAISettings

    remote = OpenAIEngine(OpenAISettings(base_url=server.base_url, model="m", api_key_env=None))
    with pytest.raises(PolyriseError, match=r"cannot score a continuation of a chat.*local engine"):
        reference_nll(Generator(remote, GenerationCache(tmp_path / "r.sqlite")), REFS, 4)
    assert server.requests == []  # refused before any request
    with pytest.raises(PolyriseError, match="reference answer '9' \\(de\\) is empty"):
        reference_nll(
            Generator(engine, GenerationCache(tmp_path / "c.sqlite")),
            [Response(id="9", lang="de", prompt="q", output="")],
            4,
        )


def test_loader_numbers_rows_without_ids_and_limits(tmp_path):
    (tmp_path / "en.json").write_text(json.dumps([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)]))
    (tmp_path / "de.json").write_text(json.dumps([{"id": 7, "instruction": "f", "output": "b"}]))
    rows = load_alpaca_eval_outputs(str(tmp_path / "{lang}.json"), ["en", "de"], limit=2)
    assert [(r.id, r.lang, r.output) for r in rows] == [("1", "en", "a0"), ("2", "en", "a1"), ("7", "de", "b")]


def test_cli_writes_scores_and_rows_and_names_a_bad_file(tiny_model_dir, tmp_path, polyrise):
    refs = tmp_path / "refs"
    refs.mkdir()
    for lang in ("en", "de"):
        rows = [{"instruction": r.prompt, "output": r.output} for r in REFS if r.lang == lang]
        (refs / f"{lang}.json").write_text(json.dumps(rows))
    out = tmp_path / "eval"
    args = ["eval", "--task", "reflik", "--model", str(tiny_model_dir), "--langs", "en,de", "--out", str(out)]
    cmd = [*args, "--source", str(refs / "{lang}.json"), "--label", "M0"]
    done = polyrise(*cmd)
    assert done.returncode == 0, done.stderr
    scores = json.loads((out / "scores.json").read_text())["reflik"]["M0"]
    assert set(scores) == {"en", "de"} and scores["en"]["n"] == 2 and scores["de"]["n"] == 1
    assert all(s["nll"] > 0 for s in scores.values())
    assert len((out / "reflik_M0.jsonl").read_text().splitlines()) == 3
    assert "nll M0" in done.stdout

    (refs / "de.json").write_text(json.dumps([{"instruction": "f"}]))
    bad = polyrise(*cmd[:-1], "M1")
    assert bad.returncode == 1
    assert "de.json: item 0: output: Field required" in bad.stderr and "Traceback" not in bad.stderr
    assert not (out / "reflik_M1.jsonl").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "x-alpacaeval-gpt4-turbo").is_dir(), reason="shared X-AlpacaEval data not present")
def test_embedded_model_finds_english_references_likelier(embedded_dir, tmp_path):
    """SmolLM2-135M is English-centric: GPT-4-turbo's English answers cost it fewer nats per token."""
    engine = Generator(HFEngine(resolve_model(str(embedded_dir)), batch_size=8), GenerationCache(tmp_path / "c"))
    refs = load_alpaca_eval_outputs(str(SHARED / "x-alpacaeval-gpt4-turbo" / "{lang}.json"), ["en", "de"], limit=8)
    scores = reflik_scores(reference_nll(engine, refs, max_answer_tokens=64))
    assert scores["en"]["n"] == scores["de"]["n"] == 8
    assert scores["en"]["nll"] < scores["de"]["nll"]
