"""The `judge` task: X-AlpacaEval-style judged pairwise win rate (as in Language Imbalance Driven Rewarding,
arXiv 2410.08964).

A judge model compares the evaluated model's answer (`output`) with another answer (`other`: the GPT-4-turbo
reference, or a competitor such as the previous iterate) in both orders; an answer not in the
instruction's language must lose. Per-language win rates come with 95% percentile-bootstrap intervals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from polyrise.errors import PolyriseError
from polyrise.evaluation.base import Metric, Scores, TaskRun, TaskSettings, TaskView
from polyrise.generation import ChatRequest, Generator, answer_prompts
from polyrise.io import (
    atomic_open,
    first_per_lang,
    iter_jsonl,
    iter_rows,
    lang_paths,
    load_rows,
    read_jsonl,
    write_jsonl,
)
from polyrise.records import Instruction, Prompt, Response
from polyrise.settings import MAX_TOKENS, JudgeSettings, SamplingSettings
from polyrise.stats import N_BOOT, bootstrap_distribution, ci_keys, mean, percentile_interval
from polyrise.templates import judge_prompt

Verdict = Literal["A", "B", "tie"]

JUDGE_SAMPLING = SamplingSettings(temperature=0.0, max_new_tokens=512)
"""Default judge decoding: greedy, room for a short rationale before the verdict line."""

_VERDICT = re.compile(  # \uff1a: the full-width colon of CJK judges
    r"(?i:\bwinner\b(?:\s+is\b)?)[\s*_:\uff1a=\-]*(?:(?i:answer|response|assistant)\s*)?[\[(\"'*_]*"
    r"(?:(?i:(?:it'?s|it\s+is)\s+)?(?i:a)\s+(?P<atie>(?i:tie|draw))(?!\w)"  # "Winner: it's a tie"
    r"|(?P<v>A|B|(?i:tie|draw))(?!\w)"
    r"|(?P<lower>[ab])(?=[\])\"'*_.!]*[ \t]*$))",  # a lone lowercase a/b ends the line
    re.MULTILINE,
)
_BRACKETED = re.compile(r"\[\[(?P<v>A|B|C|(?i:tie))\]\]")  # MT-bench style, [[C]] meaning a tie


def _normalize(token: str) -> Verdict:
    token = token.lower()
    return "tie" if token in ("tie", "draw", "c") else "A" if token == "a" else "B"


def parse_verdict(text: str) -> Verdict | None:
    """The judge's verdict from its last `Winner: ...` line (`A`, `B` or `tie`); None when absent or ambiguous.

    Tolerates markdown (`**Winner:** A`), `Winner: Answer B`, `Winner: [[A]]`, `draw` for tie, and MT-bench's
    `[[A]]`/`[[B]]`/`[[C]]`. The last line holding a verdict decides; conflicting verdicts on it give None.
    """
    for pattern in (_VERDICT, _BRACKETED):
        by_line: dict[int, set[Verdict]] = {}
        for m in pattern.finditer(text):
            groups = m.groupdict()
            token = groups["v"] or groups.get("lower") or groups.get("atie") or ""
            by_line.setdefault(text.count("\n", 0, m.start()), set()).add(_normalize(token))
        if by_line:
            found = by_line[max(by_line)]
            return next(iter(found)) if len(found) == 1 else None
    return None


@dataclass(frozen=True)
class JudgeItem:
    """One comparison: `output` is the evaluated model's answer, `other` the reference or competitor's."""

    id: str
    lang: str
    instruction: str
    output: str
    other: str


@dataclass(frozen=True)
class Judgement:
    """Both orders' verdicts and `output`'s score: 1 win, 0.5 tie, 0 loss, averaged over the parseable orders.

    `verdict_ab` is the judge's verdict with `output` as A, `verdict_ba` with `output` as B (so there "B" is
    a win). `score` is None (invalid) when neither order gave a parseable verdict.
    """

    id: str
    lang: str
    verdict_ab: Verdict | None
    verdict_ba: Verdict | None
    score: float | None
    raw_ab: str = ""
    raw_ba: str = ""

    @property
    def invalid(self) -> bool:
        return self.score is None


_OUTPUT_SCORE = {("ab", "A"): 1.0, ("ab", "B"): 0.0, ("ba", "A"): 0.0, ("ba", "B"): 1.0}


def score_verdicts(verdict_ab: Verdict | None, verdict_ba: Verdict | None) -> float | None:
    """`output`'s score from both orders' verdicts (order-inconsistent wins average to 0.5)."""
    scores = [
        0.5 if v == "tie" else _OUTPUT_SCORE[(order, v)]
        for order, v in (("ab", verdict_ab), ("ba", verdict_ba))
        if v is not None
    ]
    return sum(scores) / len(scores) if scores else None


def judge(generator: Generator, items: Sequence[JudgeItem], params: SamplingSettings | None = None) -> list[Judgement]:
    """Judge every item in both orders (one batched, cached `generate` call); results in item order."""
    params = params or JUDGE_SAMPLING
    requests = []
    for it in items:
        requests.append(ChatRequest.user(judge_prompt(it.instruction, it.output, it.other, it.lang)))
        requests.append(ChatRequest.user(judge_prompt(it.instruction, it.other, it.output, it.lang)))
    raw = generator.generate(requests, params, desc="judging")
    out = []
    for i, it in enumerate(items):
        ab, ba = raw[2 * i], raw[2 * i + 1]
        v_ab, v_ba = parse_verdict(ab), parse_verdict(ba)
        out.append(Judgement(it.id, it.lang, v_ab, v_ba, score_verdicts(v_ab, v_ba), ab, ba))
    return out


def _summary(
    point: float, boots: np.ndarray, n: int, wins: int, ties: int, losses: int, invalid: int
) -> dict[str, float | int]:
    low_key, high_key = ci_keys("win_rate")
    low, high = percentile_interval(boots)
    return {
        "win_rate": point,
        low_key: low,
        high_key: high,
        "n": n,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "invalid": invalid,
    }


def win_rates(
    judgements: Iterable[Judgement], seed: int = 0, n_boot: int = N_BOOT
) -> dict[str, dict[str, float | int]]:
    """Per language and `"average"`: win rate of `output` (mean score in [0, 1], ties half) with its 95%
    percentile-bootstrap interval (`win_rate_ci_low`, `win_rate_ci_high`; `polyrise.stats`); `n` valid
    judgements, `wins`/`ties`/`losses` (score above / equal to / below 0.5), `invalid` (excluded). The average is
    the mean of the language win rates, its interval a bootstrap stratified by language. Each language's
    resampling is seeded by (seed, lang): reproducible, and independent of which other languages are present.
    """
    by_lang: dict[str, list[Judgement]] = {}
    for j in judgements:
        by_lang.setdefault(j.lang, []).append(j)
    result: dict[str, dict[str, float | int]] = {}
    lang_boots: list[np.ndarray] = []
    totals = {"n": 0, "wins": 0, "ties": 0, "losses": 0, "invalid": 0}
    for lang in sorted(by_lang):
        js = by_lang[lang]
        scores = np.array([j.score for j in js if j.score is not None], dtype=float)
        counts = {
            "n": len(scores),
            "wins": int((scores > 0.5).sum()),
            "ties": int((scores == 0.5).sum()),
            "losses": int((scores < 0.5).sum()),
            "invalid": len(js) - len(scores),
        }
        for k, v in counts.items():
            totals[k] += v
        boots = bootstrap_distribution(scores, seed, lang, n_boot=n_boot)
        if len(scores):
            lang_boots.append(boots)
        result[lang] = _summary(mean(scores) if len(scores) else float("nan"), boots, **counts)
    rates = [float(r["win_rate"]) for r in result.values() if r["n"]]
    average = float(np.mean(rates)) if rates else float("nan")
    result["average"] = _summary(average, np.mean(lang_boots, axis=0) if lang_boots else np.empty(0), **totals)
    return result


# ---- data: rows, loaders, joins, alpaca_eval output files ---------------------------------------------


def _fields(row: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """A row (Response, Prompt, dict) as a dict with `instruction` (a Response's `prompt` counts)."""
    data = row.model_dump() if isinstance(row, BaseModel) else dict(row)
    if "instruction" not in data and "prompt" in data:
        data["instruction"] = data["prompt"]
    missing = [k for k in ("id", "lang", "instruction", "output") if data.get(k) is None]
    if missing:
        raise PolyriseError(f"an output row lacks {', '.join(missing)}: {str(data)[:200]}")
    return data


def _text_field(where: str, row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or (key == "instruction" and not value.strip()):
        raise PolyriseError(f"{where}: missing or non-text {key!r}")
    return value


def _id_field(where: str, row: Mapping[str, Any]) -> str:
    value = row.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise PolyriseError(f"{where}: missing 'id' (a string or an integer)")
    return str(value)


class _Instruction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    lang: str
    instruction: Instruction


class _Answer(_Instruction):
    output: str


def load_instructions(path_or_template: str | Path, langs: Sequence[str], limit: int | None = None) -> list[Prompt]:
    """Instructions from X-AlpacaEval JSON arrays or JSONL files with `id` + `instruction`, read by
    `io.load_rows` (a `{lang}` in the path reads one file per language; a plain path holds the one language of
    `langs` unless its rows carry `lang`). `limit` keeps the first rows of each language; an id repeated within
    a language is an error. Errors name `file:line` (JSONL) or `file: item i` (JSON array).
    """
    rows = load_rows(path_or_template, langs, _Instruction, unique_ids=True)
    return [Prompt(id=r.id, lang=r.lang, instruction=r.instruction) for r in first_per_lang(rows, limit)]


def load_alpaca_eval_outputs(
    path_or_template: str | Path, langs: Sequence[str], limit: int | None = None
) -> list[Response]:
    """Answers from alpaca_eval `model_outputs.json` files (`{lang}` in the path); the first `limit` per language.

    In a `{lang}` template's files a row without `id` gets its 1-based position (the numbering of the
    X-AlpacaEval files, whose English GPT-4-turbo file has no ids).
    """
    rows = load_rows(path_or_template, langs, _Answer)
    return [Response(id=r.id, lang=r.lang, prompt=r.instruction, output=r.output) for r in first_per_lang(rows, limit)]


def items_vs_reference(
    outputs: Sequence[BaseModel | Mapping[str, Any]],
    reference_path_template: str,
    *,
    check_instructions: bool = True,
) -> list[JudgeItem]:
    """Pair each output (rows with id/lang/instruction-or-prompt/output) with the reference answer from an
    alpaca_eval-format file (`{lang}` in the path, e.g. the GPT-4-turbo X-AlpacaEval outputs).

    Joins on `id`; a reference file without ids (the English GPT-4-turbo file) is joined on the instruction
    text. Outputs missing from the reference, or whose instruction differs from the reference's, are errors.
    """
    rows = [_fields(r) for r in outputs]
    references: dict[str, tuple[Path, dict[str, dict[str, Any]], dict[str, dict[str, Any]]]] = {}
    items = []
    for row in rows:
        lang = row["lang"]
        if lang not in references:
            [(_, path)] = lang_paths(reference_path_template, [lang])
            by_id, by_instruction = {}, {}
            for where, _, entry in iter_rows(path):
                _text_field(where, entry, "output")
                if "id" in entry:
                    by_id[_id_field(where, entry)] = entry
                by_instruction[_text_field(where, entry, "instruction").strip()] = entry
            references[lang] = (path, by_id, by_instruction)
        path, by_id, by_instruction = references[lang]
        id_, instruction = str(row["id"]), row["instruction"]
        ref = by_id.get(id_) if by_id else by_instruction.get(instruction.strip())
        if ref is None:
            raise PolyriseError(f"{path}: no reference answer for id {id_!r} ({lang})")
        if check_instructions and ref["instruction"].strip() != instruction.strip():
            raise PolyriseError(
                f"{path}: id {id_!r}: the reference's instruction differs from the evaluated one "
                f"({ref['instruction'][:60]!r} vs {instruction[:60]!r})"
            )
        items.append(JudgeItem(id_, lang, instruction, row["output"], ref["output"]))
    return items


def items_head_to_head(
    outputs_a: Sequence[BaseModel | Mapping[str, Any]], outputs_b: Sequence[BaseModel | Mapping[str, Any]]
) -> list[JudgeItem]:
    """Pair two models' answers (e.g. M(t+1) as `a` vs M(t) as `b`) on (id, lang); `a` is the evaluated
    `output`. Both sides must answer the same prompts: a missing or duplicate key is an error."""

    def index(rows: Sequence[BaseModel | Mapping[str, Any]], side: str) -> dict[tuple[str, str], dict[str, Any]]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for r in map(_fields, rows):
            key = (str(r["id"]), r["lang"])
            if key in out:
                raise PolyriseError(f"outputs {side}: duplicate row for id {key[0]!r} ({key[1]})")
            out[key] = r
        return out

    a, b = index(outputs_a, "a"), index(outputs_b, "b")
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise PolyriseError(
            f"head-to-head outputs do not cover the same prompts: {len(only_a)} only in a (e.g. {only_a[:3]}), "
            f"{len(only_b)} only in b (e.g. {only_b[:3]})"
        )
    return [
        JudgeItem(id_, lang, r["instruction"], r["output"], b[(id_, lang)]["output"]) for (id_, lang), r in a.items()
    ]


def write_alpaca_eval_outputs(
    path: str | Path,
    rows: Sequence[BaseModel | Mapping[str, Any]],
    generator_name: str,
    *,
    dataset: str = "x-alpacaeval",
) -> list[Path]:
    """Write answers as alpaca_eval `model_outputs.json` (a list of {instruction, output, generator,
    dataset, id}), atomically. A `{lang}` in `path` writes one file per language. Returns the paths written.
    A row's own `dataset` field wins over `dataset`."""
    groups: dict[Path, list[dict[str, Any]]] = {}
    for r in map(_fields, rows):
        target = Path(str(path).format(lang=r["lang"])) if "{lang}" in str(path) else Path(path)
        groups.setdefault(target, []).append(
            {
                "instruction": r["instruction"],
                "output": r["output"],
                "generator": generator_name,
                "dataset": r.get("dataset") or dataset,
                "id": str(r["id"]),
            }
        )
    if not groups and "{lang}" not in str(path):
        groups[Path(path)] = []
    for target, records in groups.items():
        with atomic_open(target) as fh:
            json.dump(records, fh, ensure_ascii=False, indent=2)
            fh.write("\n")
    return list(groups)


# ---- the task --------------------------------------------------------------------------------------------


class JudgeTask(TaskSettings):
    """Pairwise win rate of the model's answers, judged in both orders, against reference answers or against an
    evaluated baseline model's answers (head-to-head)."""

    task: Literal["judge"] = "judge"
    source: str
    """Instructions: X-AlpacaEval JSON arrays or JSONL (`id` + `instruction`), `{lang}`."""
    max_new_tokens: int = Field(default=256, ge=1, le=MAX_TOKENS)
    reference: str | None = None
    """Reference outputs in alpaca_eval format (`{lang}`); without it, the model is judged against the baseline
    (M(t+1) against M(t) in a run)."""
    judge: JudgeSettings | None = None

    @model_validator(mode="after")
    def _has_judge(self) -> JudgeTask:
        if self.judge is None:
            raise ValueError("task 'judge' needs a judge (judge.model, or judge.engine openai with an openai section)")
        return self


METRICS = (Metric("win_rate"),)


def _win_tie_or_loss(path: Path, rows: Sequence[Response], _: object) -> list[str | None]:
    """Each answer's verdict against the other answer: win, tie or loss, from the judgements written beside its
    rows (`<key>_<model>_judgements.jsonl`); None where it was not judged or the judge gave no valid verdict."""
    judged = path.with_name(f"{path.stem}_judgements.jsonl")
    verdicts = {}
    if judged.is_file():
        for _, row in iter_jsonl(judged):
            score = row.get("score")
            if isinstance(score, int | float):
                verdicts[(str(row.get("lang")), str(row.get("id")))] = (
                    "win" if score > 0.5 else "tie" if score == 0.5 else "loss"
                )
    return [verdicts.get((row.lang, row.id)) for row in rows]


VIEW = TaskView(METRICS, Response, prompt="prompt", answer="output", verdicts=_win_tie_or_loss)
"""A row: the answer to an instruction; the win rate is itself a comparison, so there are no per-item values."""


def run(task: JudgeTask, context: TaskRun) -> Scores:
    """Answer the instructions (rows, `model_outputs.json`) and judge them against the reference or the baseline's
    answers; returns win rates per language, or nothing when there is neither."""
    prompts = load_instructions(task.source, context.langs, task.limit)
    params = SamplingSettings(max_new_tokens=task.max_new_tokens)
    responses = answer_prompts(context.generator, prompts, params, desc="answering instructions")
    write_jsonl(context.rows_path(task), responses)
    out_dir, label = context.out_dir, context.label
    write_alpaca_eval_outputs(out_dir / f"{task.key}_{label}" / "{lang}" / "model_outputs.json", responses, label)
    baseline = None
    if context.baseline is not None:
        baseline_dir, baseline_label = context.baseline
        baseline = context.rows_path(task, baseline_label, baseline_dir)
    if task.reference:
        items = items_vs_reference(responses, task.reference)
    elif baseline is not None and baseline.is_file():
        items = items_head_to_head(responses, read_jsonl(baseline, Response))
    else:
        return {}
    if context.judge is None:
        raise PolyriseError(f"task {task.key!r} needs a judge model")
    assert task.judge is not None
    verdicts = judge(context.judge, items, SamplingSettings(max_new_tokens=task.judge.max_new_tokens))
    write_jsonl(out_dir / f"{task.key}_{label}_judgements.jsonl", [asdict(v) for v in verdicts])
    return win_rates(verdicts, seed=context.seed)
