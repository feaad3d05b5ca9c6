"""Sentence-representation similarity on the tiny random Llama: self-similarity 1, padding-proof pooling, PCA."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from polyrise.analysis.logit_lens import layer_states
from polyrise.analysis.similarity import (
    model_similarity,
    pca_2d,
    sentence_states,
    similarity_table,
    similarity_to_english,
    write_similarity,
)
from polyrise.cli import app
from polyrise.models import load_model, load_tokenizer, resolve_model
from polyrise.records import Prompt

SENTENCES = {
    "en": ["Give three tips for cooking rice.", "Why is the sky blue?", "Name a fruit."],
    "es": ["Da tres consejos para cocinar arroz.", "¿Por qué el cielo es azul?", "Nombra una fruta."],
    "de": ["Gib drei Tipps zum Kochen von Reis.", "Warum ist der Himmel blau?", "Nenne eine Frucht."],
}
PROMPTS = [Prompt(id=f"q{i}", lang=lang, instruction=t) for lang, ts in SENTENCES.items() for i, t in enumerate(ts)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    resolved = resolve_model(str(tiny_model_dir))
    return load_model(resolved, device=torch.device("cpu")), load_tokenizer(resolved)


def test_similarity_per_layer_is_one_for_a_language_with_itself(tiny):
    model, tokenizer = tiny
    extra = Prompt(id="only-es", lang="es", instruction="Solo en español.")  # no English twin: not compared
    states = sentence_states(model, tokenizer, [*PROMPTS, extra], batch_size=4)
    sims = similarity_to_english(states)
    layers = model.config.num_hidden_layers + 1

    assert [s["n"] for s in sims.values()] == [3, 3, 3]
    assert all(len(s["similarity"]) == layers for s in sims.values())
    assert torch.allclose(torch.tensor(sims["en"]["similarity"]), torch.ones(layers), atol=1e-5)
    assert all(-1 <= v < 1 - 1e-4 for v in sims["es"]["similarity"])
    german_as_reference = similarity_to_english({"en": states["de"], "de": states["de"]})
    assert torch.allclose(torch.tensor(german_as_reference["de"]["similarity"]), torch.ones(layers), atol=1e-5)


def test_mean_pooling_ignores_padding(tiny):
    model, tokenizer = tiny
    texts = [p.instruction for p in PROMPTS]
    batched = layer_states(model, tokenizer, texts, pool="mean", chat=False, batch_size=len(texts))
    alone = torch.cat([layer_states(model, tokenizer, [t], pool="mean", chat=False, batch_size=1) for t in texts])

    assert batched.shape == (len(texts), model.config.num_hidden_layers + 1, model.config.hidden_size)
    assert torch.allclose(batched, alone, atol=1e-5)
    ids = tokenizer(texts[0], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        embeddings = model.get_input_embeddings()(ids)[0]
    assert torch.allclose(batched[0, 0], embeddings.mean(0), atol=1e-6)  # layer 0: the plain mean of the embeddings


def test_pca_2d_shape_centre_and_order():
    x = torch.randn(20, 6, generator=torch.Generator().manual_seed(0)) * torch.tensor([5.0, 3, 1, 1, 1, 1])
    points = pca_2d(x)

    assert points.shape == (20, 2)
    assert torch.allclose(points.mean(0), torch.zeros(2), atol=1e-5)
    assert points[:, 0].var() >= points[:, 1].var()
    assert torch.equal(pca_2d(x), points)  # deterministic, signs included
    assert pca_2d(x[:1]).shape == (1, 2)


def test_ranking_table_and_files(tiny, tmp_path):
    model, tokenizer = tiny
    result = model_similarity(model, tokenizer, PROMPTS, batch_size=4, layer=1)
    assert result["pca_layer"] == 1
    assert [len(s["pca"]) for s in result["langs"].values()] == [3, 3, 3]
    results = {"before": result, "after": result}

    columns, rows = similarity_table(results)
    assert columns == ["rank", "lang", "before mean", "before L1", "after mean", "after L1"]
    means = {row[1]: float(row[2]) for row in rows}
    assert [row[1] for row in rows] == sorted(means, key=lambda lang: -means[lang])  # English itself is no row
    paths = write_similarity(results, tmp_path)
    assert [p.name for p in paths] == ["similarity.json", "similarity.md", "similarity.png", "similarity_pca.png"]
    assert json.loads(paths[0].read_text())["after"]["langs"]["en"]["n"] == 3
    assert all(p.stat().st_size > 0 for p in paths)


def test_cli_similarity_before_and_after(tiny_model_dir, tmp_path):
    for lang, texts in SENTENCES.items():
        rows = (json.dumps({"id": f"q{i}", "instruction": t}, ensure_ascii=False) for i, t in enumerate(texts))
        (tmp_path / f"{lang}.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "analysis"
    args = ["--langs", "es,de", "--source", str(tmp_path / "{lang}.jsonl"), "--limit", "2", "-o", str(out)]
    models = ["-m", f"before={tiny_model_dir}", "-m", f"after={tiny_model_dir}"]
    result = CliRunner().invoke(app, ["analyze", "similarity", *models, *args, "--layer", "2"])

    assert result.exit_code == 0, result.output
    assert "similarity to English" in result.output
    results = json.loads((out / "similarity.json").read_text())
    assert list(results) == ["before", "after"]
    assert list(results["after"]["langs"]) == ["en", "es", "de"]  # English added and first
    assert results["after"]["langs"]["de"]["n"] == 2
    assert results["after"]["pca_layer"] == 2
    for name in ("similarity.md", "similarity.png", "similarity_pca.png"):
        assert (out / name).stat().st_size > 0
    bad = CliRunner().invoke(app, ["analyze", "similarity", "-m", str(tiny_model_dir), *args, "--layer", "9"])
    assert isinstance(bad.exception, Exception) and "layers 0 (embeddings) to 2" in str(bad.exception)
