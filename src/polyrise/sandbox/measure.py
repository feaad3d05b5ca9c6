"""M0's measurements on a built sandbox: task accuracy per language and self-translation exact match per direction."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from polyrise.sandbox.world import SOURCE_LANG


def measure_m0(out: Path, langs: list[str], *, model: Any = None, tokenizer: Any = None) -> dict[str, dict[str, float]]:
    """The model in `out/model`'s task accuracy per language (MGSM scorer on `eval/{lang}.jsonl`), its gap to
    English, and its exact-match self-translation accuracy per direction (`polyrise.self_translation.translate` on
    `translation/`): `SandboxInfo`'s `accuracy`, `gap`, `translation_exact`, `translation_exact_questions`."""
    from polyrise.evaluation.math import evaluate_math, load_math
    from polyrise.generation import Generator
    from polyrise.generation.cache import GenerationCache
    from polyrise.generation.hf import HFEngine
    from polyrise.io import iter_jsonl
    from polyrise.models import resolve_model
    from polyrise.self_translation import TranslationJob, translate
    from polyrise.settings import SamplingSettings

    resolved = resolve_model(str(out / "model"))
    engine = HFEngine(resolved, batch_size=64, model=model, tokenizer=tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        generator = Generator(engine, GenerationCache(Path(tmp) / "generations.sqlite"))
        problems = load_math(str(out / "eval" / "{lang}.jsonl"), langs)
        _, scores = evaluate_math(generator, problems, SamplingSettings(max_new_tokens=48))
        accuracy = {lang: scores[lang]["accuracy"] for lang in langs}

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
    return {
        "accuracy": accuracy,
        "gap": {lang: accuracy[SOURCE_LANG] - accuracy[lang] for lang in langs if lang != SOURCE_LANG},
        "translation_exact": {k: sum(v) / len(v) for k, v in hits.items()},
        "translation_exact_questions": {k: sum(v) / len(v) for k, v in questions.items()},
    }
