"""Translation quality with sacrebleu: chrF++ and BLEU, and the model's own self-translation scored on parallel data.

BLEU tokenisation follows the target language, using only what sacrebleu runs offline without extras:
`zh` → sacrebleu's "zh"; `ja` → "ja-mecab" and `ko` → "ko-mecab" when `sacrebleu[ja]` / `sacrebleu[ko]`
are installed, else "char"; `th` (no spaces between words) → "char"; every other language → "13a".
The SentencePiece tokenizers (flores101/flores200/spBLEU) are not used: they download a model at first use.
BLEU numbers are comparable only under the same tokenizer, so every score reports `bleu_tokenize`.
chrF++ (`CHRF(word_order=2)`) needs no tokenizer and is the headline metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from polyrise.config import SamplingSettings
from polyrise.errors import PolyriseError
from polyrise.generation import Generator
from polyrise.io import iter_jsonl, read_json_array
from polyrise.self_translation import TranslationJob, translate

_PREFERRED_TOKENIZE = {"zh": "zh", "ja": "ja-mecab", "ko": "ko-mecab", "th": "char"}


@cache
def _tokenizer_works(name: str) -> bool:
    from sacrebleu.metrics import BLEU

    try:
        BLEU(tokenize=name).corpus_score(["a"], [["a"]])
    except Exception:  # missing optional dependency (RuntimeError/ImportError) or a download that cannot happen
        return False
    return True


def bleu_tokenize(lang: str | None) -> str:
    """The sacrebleu BLEU tokenizer for texts in `lang` (see the module docstring); "13a" when unknown."""
    preferred = _PREFERRED_TOKENIZE.get(lang or "", "13a")
    return preferred if _tokenizer_works(preferred) else "char"


def corpus_scores(
    hypotheses: Sequence[str], references: Sequence[str], lang: str | None = None
) -> dict[str, float | int | str]:
    """Corpus chrF++ and BLEU (0 to 100) of hypotheses against one reference each, `n` segments.

    `lang` is the language of the texts (the translation target); it picks the BLEU tokenizer, returned as
    `bleu_tokenize`. With no segments both scores are NaN.
    """
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise PolyriseError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    tokenize = bleu_tokenize(lang)
    if not hypotheses:
        return {"chrf++": float("nan"), "bleu": float("nan"), "n": 0, "bleu_tokenize": tokenize}
    hyps, refs = list(hypotheses), [list(references)]
    return {
        "chrf++": CHRF(word_order=2).corpus_score(hyps, refs).score,
        "bleu": BLEU(tokenize=tokenize).corpus_score(hyps, refs).score,
        "n": len(hyps),
        "bleu_tokenize": tokenize,
    }


@dataclass(frozen=True)
class ParallelRow:
    """One text in several languages, joined on `id`."""

    id: str
    texts: dict[str, str] = field(hash=False)


def _json_items(path: Path) -> list[tuple[str, dict]]:
    """(`file: item N`, object) of a JSON array file (the X-AlpacaEval shape, whose ids are integers → text)."""
    items = read_json_array(path)
    if not all(isinstance(item, dict) for item in items):
        raise PolyriseError(f"{path}: expected a JSON array of objects")
    for item in items:
        if isinstance(item.get("id"), int):
            item["id"] = str(item["id"])
    return [(f"{path}: item {i}", item) for i, item in enumerate(items)]


def _read_texts(path: Path, column: str) -> dict[str, str]:
    rows = _json_items(path) if path.suffix == ".json" else [(f"{path}:{n}", row) for n, row in iter_jsonl(path)]
    texts: dict[str, str] = {}
    for where, row in rows:
        for key in ("id", column):
            if not isinstance(row.get(key), str):
                raise PolyriseError(f"{where}: {key}: a string is required")
        if row["id"] in texts:
            raise PolyriseError(f"{where}: duplicate id {row['id']!r}")
        texts[row["id"]] = row[column]
    return texts


def load_parallel(
    path_template: str | Path, langs: Sequence[str], limit: int | None = None, column: str = "instruction"
) -> list[ParallelRow]:
    """Rows whose `id` occurs in every language's file (`{lang}` in the path), in the first language's order.

    Files are JSONL with `id` and `column` (default `instruction`: the shape of alpagasus-1k/<lang>.jsonl), or
    JSON arrays of such objects (x-alpacaeval/<lang>.json).
    `limit` keeps the first rows after the join.
    """
    template = str(path_template)
    if "{lang}" not in template:
        raise PolyriseError(f"{template}: the path template needs a {{lang}} placeholder")
    if not langs:
        raise PolyriseError("no languages given")
    per_lang = {lang: _read_texts(Path(template.format(lang=lang)), column) for lang in dict.fromkeys(langs)}
    first, *rest = per_lang.values()
    rows = [
        ParallelRow(pid, {lang: texts[pid] for lang, texts in per_lang.items()})
        for pid in first
        if all(pid in texts for texts in rest)
    ]
    return rows[:limit] if limit is not None else rows


def self_translation_quality(
    generator: Generator,
    parallel: Sequence[ParallelRow],
    source_lang: str,
    langs: Sequence[str],
    params: SamplingSettings,
) -> dict[str, dict[str, float | int | str]]:
    """Self-translate every row `source_lang`→L and L→`source_lang` for each L in `langs`; score each direction.

    Keys are directions such as "en-de"; values are `corpus_scores` against the aligned references plus
    `failed`: translations that could not be extracted, scored as empty hypotheses.
    """
    targets = [lang for lang in dict.fromkeys(langs) if lang != source_lang]
    for row in parallel:
        missing = [lang for lang in (source_lang, *targets) if lang not in row.texts]
        if missing:
            raise PolyriseError(f"parallel row {row.id!r} has no text in {', '.join(missing)}")
    directions = [(source_lang, lang) for lang in targets] + [(lang, source_lang) for lang in targets]
    jobs = [TranslationJob(row.id, "prompt", src, tgt, row.texts[src]) for src, tgt in directions for row in parallel]
    translations = translate(generator, jobs, params, desc="translating parallel data")
    results: dict[str, dict[str, float | int | str]] = {}
    for d, (src, tgt) in enumerate(directions):
        part = translations[d * len(parallel) : (d + 1) * len(parallel)]
        hyps = [t.output if t.output is not None else "" for t in part]
        refs = [row.texts[tgt] for row in parallel]
        scores = corpus_scores(hyps, refs, lang=tgt)
        scores["failed"] = sum(t.output is None for t in part)
        results[f"{src}-{tgt}"] = scores
    return results
