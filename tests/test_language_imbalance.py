"""Language Imbalance pairs: both directions, and every filter counted per language and reason."""

from __future__ import annotations

import json

import pytest
import yaml

from polyrise.langid import LangIdSettings
from polyrise.methods.language_imbalance import DROP_REASONS, FilterSettings, build_pairs, is_degenerate
from polyrise.records import Response, Translation

EN = "Drink plenty of water every day, sleep at least seven hours, and walk for thirty minutes."
ES = "Bebe mucha agua cada día, duerme al menos siete horas y camina durante treinta minutos."
ES_NATIVE = "Come frutas y verduras todos los días, haz ejercicio con regularidad y descansa bien."
EN_BACK = "Eat fruits and vegetables every day, exercise regularly and rest well at night."

FILTERS = FilterSettings()


def _tr(pid: str, src: str, tgt: str, source: str, output: str | None) -> Translation:
    return Translation(id=pid, kind="response", src_lang=src, lang=tgt, source=source, output=output, raw=output or "")


def _build(en_answer=EN, es_answer=ES_NATIVE, to_es=ES, to_en=EN_BACK, filters=FILTERS, langid=None):
    prompts = {("1", "en"): "Give health tips.", ("1", "es"): "Da consejos de salud."}
    responses = [
        Response(id="1", lang="en", prompt=prompts[("1", "en")], output=en_answer),
        Response(id="1", lang="es", prompt=prompts[("1", "es")], output=es_answer),
    ]
    translations = [_tr("1", "en", "es", en_answer, to_es), _tr("1", "es", "en", es_answer, to_en)]
    return build_pairs(prompts, responses, translations, "en", ["es"], filters, langid)


def test_pairs_in_both_directions():
    pairs, stats, dropped = _build()
    assert dropped == []
    by_lang = {p.lang: p for p in pairs}
    es, en = by_lang["es"], by_lang["en"]
    assert (es.prompt, es.chosen, es.rejected, es.via) == ("Da consejos de salud.", ES, ES_NATIVE, "es")
    assert (en.prompt, en.chosen, en.rejected, en.via) == ("Give health tips.", EN, EN_BACK, "es")
    assert stats["es"]["target"]["kept"] == stats["es"]["english"]["kept"] == 1
    assert set(es.model_dump()) == {"id", "lang", "via", "prompt", "chosen", "rejected"}


def _dropped(stats, direction):
    return {k: v for k, v in stats["es"][direction]["dropped"].items() if v}


@pytest.mark.parametrize(
    ("kwargs", "direction", "reason"),
    [
        ({"to_es": None}, "target", "translation_failure"),
        ({"to_en": None}, "english", "translation_failure"),
        ({"es_answer": "   "}, "target", "empty"),
        ({"to_es": ES_NATIVE}, "target", "identical"),
        ({"to_es": "Bebe agua.\n" * 5}, "target", "degenerate_repetition"),
        ({"to_es": EN}, "target", "wrong_language"),  # "translation" left in English
        ({"to_es": ES + " " + ES + " " + ES + " " + ES}, "target", "length_ratio"),
        ({"en_answer": "Water."}, "english", "length_ratio"),
    ],
)
def test_each_filter_drops_and_counts(kwargs, direction, reason):
    pairs, stats, dropped = _build(**kwargs)
    assert _dropped(stats, direction) == {reason: 1}
    [pair] = dropped  # written per sample (pairs_dropped.jsonl), as far as it was built
    assert (pair.reason, pair.lang, pair.via) == (reason, "es" if direction == "target" else "en", "es")
    assert pair.prompt == ("Da consejos de salud." if direction == "target" else "Give health tips.")
    sides = {"target": (kwargs.get("to_es", ES), kwargs.get("es_answer", ES_NATIVE))}
    sides["english"] = (kwargs.get("en_answer", EN), kwargs.get("to_en", EN_BACK))
    assert (pair.chosen, pair.rejected) == sides[direction]
    assert reason in DROP_REASONS
    assert stats["es"][direction]["kept"] == 0
    assert len(pairs) == 1  # the other direction is unaffected


def test_short_texts_skip_language_check():
    filters = FilterSettings(max_length_ratio=10)
    _, stats, _ = _build(to_es=EN.upper(), filters=filters, langid=LangIdSettings(min_words=10_000))
    assert stats["es"]["target"]["kept"] == 1


def test_degenerate_rejected_is_kept():
    pairs, _, _ = _build(es_answer="Agua agua agua.\n" * 8, filters=FilterSettings(min_length_ratio=0.01))
    assert any(p.lang == "es" for p in pairs)


def test_is_degenerate():
    assert is_degenerate("a\nb\na\na\na\na", 5)
    assert not is_degenerate("a\nb\na\na\na", 5)
    assert not is_degenerate("", 5)


def test_length_ratio_bounds_must_be_ordered():
    with pytest.raises(ValueError, match="min_length_ratio"):
        FilterSettings(min_length_ratio=2, max_length_ratio=1)


def test_cli_pairs_writes_the_dropped_pairs_beside_the_kept(tmp_path):
    from typer.testing import CliRunner

    from polyrise.cli import app
    from polyrise.io import read_jsonl, write_jsonl
    from polyrise.records import DroppedPair, PreferencePair, Prompt

    prompts = [
        Prompt(id="1", lang="en", instruction="Give health tips."),
        Prompt(id="1", lang="es", instruction="Da consejos de salud."),
    ]
    responses = [
        Response(id="1", lang="en", prompt="Give health tips.", output=EN),
        Response(id="1", lang="es", prompt="Da consejos de salud.", output=ES_NATIVE),
    ]
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    write_jsonl(tmp_path / "responses.jsonl", responses)
    write_jsonl(
        tmp_path / "translations.jsonl", [_tr("1", "en", "es", EN, None), _tr("1", "es", "en", ES_NATIVE, EN_BACK)]
    )
    files = ("--prompts", "--responses", "--translations")
    args = [x for flag in files for x in (flag, str(tmp_path / f"{flag[2:]}.jsonl"))]
    result = CliRunner().invoke(app, ["pairs", *args, "--languages", "es", "-o", str(tmp_path / "pairs.jsonl")])
    assert result.exit_code == 0, result.output
    assert [p.lang for p in read_jsonl(tmp_path / "pairs.jsonl", PreferencePair)] == ["en"]
    [dropped] = read_jsonl(tmp_path / "pairs_dropped.jsonl", DroppedPair)
    assert (dropped.lang, dropped.reason, dropped.chosen, dropped.rejected) == (
        "es",
        "translation_failure",
        None,
        ES_NATIVE,
    )
    # with a run config, its filters decide: a length ratio no pair meets drops the English pair too
    config = tmp_path / "run.yaml"
    strict = {"min_length_ratio": 50, "max_length_ratio": 60}
    config.write_text(yaml.safe_dump({"languages": ["es"], "filters": strict}))
    out = tmp_path / "strict.jsonl"
    result = CliRunner().invoke(app, ["pairs", *args, "--config", str(config), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert read_jsonl(out, PreferencePair) == []
    reasons = {d.reason for d in read_jsonl(tmp_path / "strict_dropped.jsonl", DroppedPair)}
    assert reasons == {"translation_failure", "length_ratio"}
    assert json.loads((tmp_path / "strict_stats.json").read_text())["es"]["english"]["dropped"]["length_ratio"] == 1
