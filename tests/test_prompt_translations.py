"""The prompts stage of the DPO methods: given `{lang}` translations, per-iteration slices, and the checks that drop
junk self-translations (strings like those a quickstart run kept) before anything is generated for them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from engines import ScriptedEngine

from polyrise.config import RunConfig
from polyrise.context import Stage
from polyrise.errors import PolyriseError
from polyrise.generation import Generator
from polyrise.generation.cache import GenerationCache
from polyrise.langid import LangIdSettings
from polyrise.layout import RunLayout
from polyrise.methods._dpo_loop import SelfTranslatedPrompts, add_prompt_stats, prompt_cells
from polyrise.records import Prompt, Translation
from polyrise.self_translation import prompt_drop_reason, translate_prompts
from polyrise.settings import PromptCheckSettings, SamplingSettings

RUN_LANGS = ["en", "es", "ru", "de", "fr"]


def _reason(source: str, output: str | None, lang: str, **checks: Any) -> str | None:
    attempt = Translation(id="1", kind="prompt", src_lang="en", lang=lang, source=source, output=output, raw="")
    return prompt_drop_reason(attempt, PromptCheckSettings(**checks), LangIdSettings(), RUN_LANGS)


@pytest.mark.parametrize(
    ("source", "output", "lang", "reason"),
    [
        ("I do not know the market of the almond tree.", None, "fr", "translation_failure"),
        (
            "I do not know the market of the almond tree.",
            "<french>Je ne sapere pas le marché de l'amélle",
            "fr",
            "protocol_tags",
        ),
        ("Name two languages.", "<German:</German>\n\n<English:</English>", "de", "protocol_tags"),
        ("Translate the sentence.", "<sentence>Übersetze den Satz.</sentence>", "de", "protocol_tags"),
        (
            "Those who live in the light are good people.",
            "Ceux qui sont dans la lumière sont bien bien bien bien bien bien bien bien bien",
            "fr",
            "degenerate_repetition",
        ),
        (
            "Write a poem about the sea.",
            "Escribe un poema sobre el mar. Escribe un poema sobre el mar. Escribe un poema sobre el mar. "
            "Escribe un poema sobre el mar.",
            "es",
            "degenerate_repetition",
        ),
        (
            "Give three tips for staying healthy and explain each one.",
            "Give three tips for staying  healthy and explain each one.",
            "fr",
            "copy_of_source",
        ),
        (
            "Describe the function of a computer motherboard in a few sentences.",
            "Describe the role of a computer motherboard in a few short sentences please.",
            "fr",
            "wrong_language",
        ),
        (
            "Give three tips.",
            "Donnez trois conseils pour rester en bonne santé, avec des détails et des exemples concrets pour "
            "chacun, et expliquez pourquoi c'est important dans la vie quotidienne de tout le monde.",
            "fr",
            "length_ratio",
        ),
        ("Give three tips for staying healthy.", "Donnez trois conseils pour rester en bonne santé.", "fr", None),
        ("Describe the function of a computer motherboard", "描述计算机主板的功能", "zh", None),
        # what the source itself has is not held against the translation
        ("Explain the <sentence> tag of HTML-like markup.", "Explique la balise <sentence> du balisage.", "fr", None),
        ("Why do people say very very very very good?", "Pourquoi dit-on très très très très bien ?", "fr", None),
    ],
)
def test_each_prompt_check(source, output, lang, reason):
    assert _reason(source, output, lang) == reason


def test_repeat_limit_and_ratio_bounds_are_settings():
    repeated = "Ceux qui sont dans la lumière sont bien bien bien, et heureux."
    assert _reason("Those in the light are good, and happy.", repeated, "fr") is None
    assert _reason("Those in the light are good, and happy.", repeated, "fr", repeat_limit=3) == "degenerate_repetition"
    with pytest.raises(ValueError, match="min_length_ratio"):
        PromptCheckSettings(min_length_ratio=2.0, max_length_ratio=1.0)


def test_translate_prompts_keeps_given_rows_and_drops_checked_out_ones(tmp_path):
    engine = ScriptedEngine(
        {"into French": "<french>Je ne sapere pas le marché de l'amélle</translated>", "into Spanish": "Hola a todos"}
    )
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    source = [Prompt(id="1", lang="en", instruction="Hello everyone"), Prompt(id="2", lang="en", instruction="Bye")]
    given = [Prompt(id="2", lang="es", instruction="Adiós")]
    prompts, attempts, dropped = translate_prompts(
        gen, source, ["es", "fr"], SamplingSettings(), given=given, checks=PromptCheckSettings()
    )
    assert sorted((a.id, a.lang) for a in attempts) == [("1", "es"), ("1", "fr"), ("2", "fr")]  # not ("2", "es")
    assert {(p.id, p.lang, p.instruction) for p in prompts if p.lang == "es"} == {
        ("1", "es", "Hola a todos"),
        ("2", "es", "Adiós"),
    }
    assert [(d.id, d.lang, d.reason) for d in dropped] == [("1", "fr", "protocol_tags"), ("2", "fr", "protocol_tags")]
    assert not [p for p in prompts if p.lang == "fr"]
    # without checks (question alignment), only failures are dropped
    _, _, unchecked = translate_prompts(gen, source, ["fr"], SamplingSettings())
    assert unchecked == []


class _Run:
    """The RunContext the prompts stage needs: a config, a layout, and a scripted translator."""

    def __init__(self, config: RunConfig, root: Path, engine: ScriptedEngine) -> None:
        self.config, self.layout = config, RunLayout(root)
        self.cache = GenerationCache(root / "cache.sqlite")
        self.engine = engine

    def translator(self, spec: str) -> Generator:
        return Generator(self.engine, self.cache)

    def model_spec(self, k: int) -> str:
        return f"M{k}"

    def translator_models(self, t: int) -> list[str]:
        return []

    def translator_settings(self) -> dict[str, Any]:
        return {}


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _config(tmp_path: Path, **prompts: Any) -> RunConfig:
    return RunConfig.model_validate(
        {"output_dir": str(tmp_path / "runs"), "languages": ["es", "fr"], "iterations": 2, "prompts": prompts}
    )


def test_a_lang_source_gives_its_translations_and_the_rest_is_self_translated(tmp_path):
    source = tmp_path / "{lang}.jsonl"
    _write(
        tmp_path / "en.jsonl",
        [{"id": f"p{i}", "instruction": f"Give me {i} good reasons to learn French."} for i in range(4)],
    )
    _write(
        tmp_path / "es.jsonl",
        [{"id": "p0", "instruction": "Dame 0 buenas razones."}, {"id": "p3", "instruction": "Dame 3."}],
    )
    engine = ScriptedEngine(
        {
            "into Spanish": "Dame buenas razones para aprender francés.",
            "into French": "Donne-moi de bonnes raisons d'apprendre le français.",
        }
    )
    run = _Run(_config(tmp_path, source=str(source), per_iteration=2), tmp_path / "run", engine)
    prompts = SelfTranslatedPrompts(run)
    assert [p.id for p in prompts.prompts(0)] == ["p0", "p1"] and [p.id for p in prompts.prompts(1)] == ["p2", "p3"]
    (tmp_path / "run" / "iter_0").mkdir(parents=True)
    counts = prompts.stage(0).run()
    assert counts == {"prompts": 6, "given": 1, "dropped": 0}
    rows = [
        Prompt(**json.loads(line)) for line in (tmp_path / "run" / "iter_0" / "prompts.jsonl").read_text().splitlines()
    ]
    assert ("p0", "es", "Dame 0 buenas razones.") in {(p.id, p.lang, p.instruction) for p in rows}
    assert {p.id for p in rows} == {"p0", "p1"}  # iteration 0's slice only
    stats = json.loads((tmp_path / "run" / "iter_0" / "prompts_stats.json").read_text())
    assert stats["es"] == {"given": 1, "self_translated": 1, "dropped": dict.fromkeys(stats["es"]["dropped"], 0)}
    assert (stats["fr"]["given"], stats["fr"]["self_translated"]) == (0, 2)
    pairs_stats: dict[str, dict[str, Any]] = {"es": {}, "fr": {}}
    add_prompt_stats(pairs_stats, tmp_path / "run" / "iter_0" / "prompts_stats.json")
    assert prompt_cells(pairs_stats["es"]) == ("1/1", "-") and pairs_stats["fr"]["prompt_translation_failures"] == 0


def test_each_iteration_hashes_its_own_slice(tmp_path):
    _write(tmp_path / "en.jsonl", [{"id": str(i), "instruction": f"Question {i}?"} for i in range(4)])
    engine = ScriptedEngine({})
    stages: list[Stage] = [
        SelfTranslatedPrompts(
            _Run(_config(tmp_path, source=str(tmp_path / "en.jsonl"), **extra), tmp_path / "run", engine)
        ).stage(t)
        for extra, t in (({"per_iteration": 2}, 0), ({"per_iteration": 2}, 1), ({}, 0), ({}, 1))
    ]
    sliced_0, sliced_1, whole_0, whole_1 = (json.dumps(s.settings, sort_keys=True) for s in stages)
    assert sliced_0 != sliced_1 and whole_0 == whole_1


def test_a_source_too_short_for_the_iterations_names_the_key(tmp_path):
    _write(tmp_path / "en.jsonl", [{"id": str(i), "instruction": f"Question {i}?"} for i in range(3)])
    run = _Run(
        _config(tmp_path, source=str(tmp_path / "en.jsonl"), per_iteration=2), tmp_path / "run", ScriptedEngine({})
    )
    with pytest.raises(PolyriseError, match=r"prompts\.per_iteration: 2 iterations of 2 prompts need 4 .* has 3"):
        SelfTranslatedPrompts(run).source  # noqa: B018
