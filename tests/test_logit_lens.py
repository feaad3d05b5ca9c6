"""Logit lens on the tiny random Llama: one distribution per layer, the last one the model's own, padding-proof."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from polyrise.analysis.logit_lens import METRICS, lens_stats, logit_lens, token_languages
from polyrise.cli import app
from polyrise.models import load_model, load_tokenizer, resolve_model
from polyrise.records import Prompt

LANGS = ["en", "de", "es", "fr", "zh"]
"""In the order `lens_stats` puts them, so every test here shares one cached labelling."""
SENTENCES = {
    "en": ["Give three tips for cooking rice.", "Why is the sky blue?"],
    "de": ["Gib drei Tipps zum Kochen von Reis.", "Warum ist der Himmel blau?"],
    "es": ["Da tres consejos para cocinar arroz.", "¿Por qué el cielo es azul?"],
    "fr": ["Donne trois conseils pour cuire le riz.", "Pourquoi le ciel est-il bleu ?"],
    "zh": ["给出三个煮米饭的建议。", "为什么天空是蓝色的"],
}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    resolved = resolve_model(str(tiny_model_dir))
    return load_model(resolved, device=torch.device("cpu")), load_tokenizer(resolved)


def test_every_layer_gives_a_distribution_and_the_last_is_the_models_own(tiny):
    model, tokenizer = tiny
    texts = ["Hi", *SENTENCES["es"], "Explain, step by step and with an example, how a rainbow forms."]
    alone = torch.stack(list(logit_lens(model, tokenizer, texts, batch_size=1)))
    padded = torch.stack(list(logit_lens(model, tokenizer, texts, batch_size=len(texts))))  # left padding

    assert alone.shape == (len(texts), model.config.num_hidden_layers + 1, model.config.vocab_size)
    assert torch.allclose(alone.sum(-1), torch.ones(alone.shape[:2]), atol=1e-5)
    assert torch.allclose(padded, alone, atol=1e-5)
    for text, probs in zip(texts, padded, strict=True):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(rendered, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            own = torch.softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
        assert torch.allclose(probs[-1], own, atol=1e-5)
        assert not torch.allclose(probs[0], own, atol=0, rtol=1e-2)  # the embedding layer is not a copy of it


def test_token_languages_by_script_then_langid(tokenizer):
    labels = token_languages(tokenizer, LANGS)

    def lang_of(text: str) -> str | None:
        (token,) = tokenizer.encode(text)
        return LANGS[labels[token]] if labels[token] >= 0 else None

    assert labels.shape == (len(tokenizer),)
    assert [lang_of(w) for w in (" you", " house", " und", " der", " que", " est", "的")] == [
        "en",
        "en",
        "de",
        "de",
        "es",
        "fr",
        "zh",
    ]
    assert [lang_of(w) for w in ("7", ",", " (", "a", "<|im_start|>")] == [None] * 5  # digits, punctuation, special
    assert lang_of(" the") is None  # py3langid has no n-gram of "the": no evidence, so no label
    assert lang_of(" на") is None  # Cyrillic, but ru was not asked for
    assert token_languages(tokenizer, LANGS) is labels  # computed once per vocabulary and language list


def test_mass_fractions_per_language_and_layer(tiny):
    model, tokenizer = tiny
    prompts = [Prompt(id=str(i), lang=lang, instruction=t) for lang, ts in SENTENCES.items() for i, t in enumerate(ts)]
    stats = lens_stats(model, tokenizer, prompts, batch_size=4)

    assert list(stats) == LANGS
    for lang, s in stats.items():
        assert s["n"] == 2
        for metric in METRICS:
            assert len(s[metric]) == model.config.num_hidden_layers + 1
            assert all(0 <= v <= 1 for v in s[metric])
        if lang == "en":
            assert s["en_mass"] == s["lang_mass"]
        else:
            assert all(en + own <= 1 + 1e-6 for en, own in zip(s["en_mass"], s["lang_mass"], strict=True))


def test_cli_logit_lens_before_and_after(tiny_model_dir, tmp_path):
    for lang, texts in SENTENCES.items():
        rows = (json.dumps({"id": f"q{i}", "instruction": t}, ensure_ascii=False) for i, t in enumerate(texts))
        (tmp_path / f"{lang}.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "analysis"
    args = ["--langs", ",".join(LANGS), "--source", str(tmp_path / "{lang}.jsonl"), "--limit", "1", "-o", str(out)]
    models = ["-m", f"before={tiny_model_dir}", "-m", f"after={tiny_model_dir}"]
    result = CliRunner().invoke(app, ["analyze", "logit-lens", *models, *args])

    assert result.exit_code == 0, result.output
    assert "logit lens" in result.output
    results = json.loads((out / "logit_lens.json").read_text())
    assert list(results) == ["before", "after"]
    assert results["before"] == results["after"]  # the same weights give the same numbers
    assert results["after"]["zh"]["n"] == 1
    assert "| before | zh | 1 |" in (out / "logit_lens.md").read_text()
    assert (out / "logit_lens.png").read_bytes()[:4] == b"\x89PNG"
