"""M0's measurements on a built sandbox: task accuracy per language and self-translation exact match per direction,
and the table `polyrise sandbox build` prints."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyrise.sandbox.world import SOURCE_LANG

if TYPE_CHECKING:
    from polyrise.sandbox.build import SandboxInfo


def measure_m0(info: SandboxInfo, *, model: Any = None, tokenizer: Any = None) -> SandboxInfo:
    """Fill `info` with the model's task accuracy per language (MGSM scorer on `eval/{lang}.jsonl`) and the
    exact-match self-translation accuracy per direction (`polyrise.self_translation.translate` on `translation/`)."""
    from polyrise.config import SamplingSettings
    from polyrise.evaluation.math import evaluate_math, load_math
    from polyrise.generation import Generator
    from polyrise.generation.cache import GenerationCache
    from polyrise.generation.hf import HFEngine
    from polyrise.io import iter_jsonl
    from polyrise.models import resolve_model
    from polyrise.self_translation import TranslationJob, translate

    out = Path(info.out)
    langs = info.languages
    resolved = resolve_model(str(out / "model"))
    engine = HFEngine(resolved, batch_size=64, model=model, tokenizer=tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        generator = Generator(engine, GenerationCache(Path(tmp) / "generations.sqlite"))
        problems = load_math(str(out / "eval" / "{lang}.jsonl"), langs)
        _, scores = evaluate_math(generator, problems, SamplingSettings(max_new_tokens=48))
        info.accuracy = {lang: scores[lang]["accuracy"] for lang in langs}
        info.gap = {lang: info.accuracy[SOURCE_LANG] - info.accuracy[lang] for lang in langs if lang != SOURCE_LANG}

        texts = {
            lang: {row["id"]: row["instruction"] for _, row in iter_jsonl(out / "translation" / f"{lang}.jsonl")}
            for lang in langs
        }
        jobs, refs = [], []
        for code in langs[1:]:
            for src, tgt in ((SOURCE_LANG, code), (code, SOURCE_LANG)):
                for id_, text in texts[src].items():
                    jobs.append(TranslationJob(id_, "prompt", src, tgt, text))
                    refs.append(texts[tgt][id_])
        results = translate(generator, jobs, SamplingSettings(max_new_tokens=96), desc="self-translation")
        hits: dict[str, list[bool]] = {}
        questions: dict[str, list[bool]] = {}
        for t, ref in zip(results, refs, strict=True):
            direction = f"{t.src_lang}-{t.lang}"
            hits.setdefault(direction, []).append(t.output == ref)
            if t.id.startswith("q"):
                questions.setdefault(direction, []).append(t.output == ref)
        info.translation_exact = {k: sum(v) / len(v) for k, v in hits.items()}
        info.translation_exact_questions = {k: sum(v) / len(v) for k, v in questions.items()}
    return info


def summary_table(info: SandboxInfo) -> tuple[list[str], list[list[str]]]:
    """M0's numbers as table columns and rows, one row per language: task accuracy, gap to English, and exact-match
    self-translation into and out of the language (all held-out texts, and the held-out questions alone)."""

    def cell(table: dict[str, float], key: str) -> str:
        return f"{table[key]:.3f}" if key in table else "-"

    rows = []
    for lang in info.languages:
        into, out = f"{SOURCE_LANG}-{lang}", f"{lang}-{SOURCE_LANG}"
        rows.append(
            [
                lang,
                cell(info.accuracy, lang),
                f"{info.gap[lang]:+.3f}" if lang in info.gap else "-",
                cell(info.translation_exact, into),
                cell(info.translation_exact, out),
                cell(info.translation_exact_questions, into),
                cell(info.translation_exact_questions, out),
            ]
        )
    return ["lang", "accuracy", "gap", "en→lang", "lang→en", "en→lang q", "lang→en q"], rows
