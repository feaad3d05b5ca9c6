"""Measurements on a built sandbox: M0's task accuracy per language and self-translation exact match per direction,
and how well the English alignment's implicit reward (and M0's plain likelihood) tells gold answers from wrong ones."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polyrise.records import PreferencePair
from polyrise.sandbox.world import SOURCE_LANG
from polyrise.stats import interval_entries


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


def pair_accuracy(aligned: np.ndarray, reference: np.ndarray, seed: int, key: str) -> dict[str, dict[str, float]]:
    """From the summed log-probs of (chosen, rejected) per pair (shape n x 2) under the aligned policy and its
    reference: how often the implicit reward log aligned - log reference ranks chosen strictly above rejected
    (`implicit_reward`), and how often the reference's plain log-likelihood does (`m0_likelihood`, the baseline
    the reward must beat); each `accuracy` with its 95% bootstrap interval (seeded by `seed` and `key`) and `n`."""
    aligned, reference = np.asarray(aligned, float), np.asarray(reference, float)
    reward = aligned - reference
    right = {
        "implicit_reward": reward[:, 0] > reward[:, 1],
        "m0_likelihood": reference[:, 0] > reference[:, 1],
    }
    return {
        name: interval_entries("accuracy", hits.astype(float), seed, f"{key}/{name}") | {"n": len(hits)}
        for name, hits in right.items()
    }


def measure_alignment(
    model_dir: Path,
    aligned_dir: Path,
    pairs: Mapping[str, Sequence[PreferencePair]],
    seed: int,
    *,
    model: Any = None,
    tokenizer: Any = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """`pair_accuracy` of each named set of English preference pairs (`train`: the alignment's own; `held_out`),
    the answers scored after the chat-rendered question as Implicit Cross-Lingual Rewarding scores them; `model`
    and `tokenizer`: `model_dir`'s, already loaded."""
    from polyrise.generation import ChatRequest
    from polyrise.generation.hf import HFEngine
    from polyrise.models import resolve_model

    engines = {
        "aligned": HFEngine(resolve_model(str(aligned_dir)), batch_size=64),
        "reference": HFEngine(resolve_model(str(model_dir)), batch_size=64, model=model, tokenizer=tokenizer),
    }
    result = {}
    for name, rows in pairs.items():
        logps = {}
        for role, engine in engines.items():
            requests = [(engine.render(ChatRequest.user(p.prompt)), y) for p in rows for y in (p.chosen, p.rejected)]
            logps[role] = np.array([x.logprob for x in engine.loglikelihood(requests)]).reshape(-1, 2)
        result[name] = pair_accuracy(logps["aligned"], logps["reference"], seed, name)
    return result
