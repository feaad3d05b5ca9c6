"""Judged pairwise win rates: verdict parsing, both-order scoring, bootstrap intervals, data joins and files."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from polyrise.errors import PolyriseError
from polyrise.evaluation.judge import (
    JUDGE_SAMPLING,
    JudgeItem,
    Judgement,
    items_head_to_head,
    items_vs_reference,
    judge,
    load_alpaca_eval_outputs,
    load_instructions,
    parse_verdict,
    win_rates,
    write_alpaca_eval_outputs,
)
from polyrise.generation import ChatRequest, Generator
from polyrise.generation.cache import GenerationCache
from polyrise.records import Response
from polyrise.settings import SamplingSettings
from polyrise.templates import judge_prompt

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer A is more helpful.\nWinner: A", "A"),
        ("Winner: B", "B"),
        ("Both are fine.\nWinner: tie", "tie"),
        ("Winner: Tie.", "tie"),
        ("Winner: draw", "tie"),
        ("Winner: it's a tie", "tie"),
        ("**Winner:** B", "B"),
        ("**Winner: A**", "A"),
        ("Winner: **Answer B**", "B"),
        ("Winner: [[A]]", "A"),
        ("Winner: (B)", "B"),
        ("winner: b", "B"),  # a lone lowercase letter ending the line
        ("Winner\uff1aA", "A"),  # full-width colon
        ("The winner is A.", "A"),
        ("Winner: A\n(I preferred its structure.)", "A"),  # trailing prose after the verdict line
        ("First I thought Winner: A, but no.\nWinner: B", "B"),  # the last verdict line decides
        ("Final verdict: [[C]]", "tie"),  # MT-bench style
        ("Winner: A, Winner: B or Winner: tie", None),  # echoing the format: ambiguous
        ("Winner: Both", None),
        ("Winner: a close call", None),
        ("A is better than B.", None),
        ("", None),
    ],
)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_judge_prompt_names_the_language_and_the_format():
    text = judge_prompt("Wie geht's?", "Gut.", "Fine.", "de")
    assert "written in German" in text and "NOT written in German" in text and "must lose" in text
    assert text.index("<answer_a>\nGut.\n</answer_a>") < text.index("<answer_b>\nFine.\n</answer_b>")
    assert text.rstrip().endswith("Winner: A\nWinner: B\nWinner: tie")


class JudgeEngine:
    """Answers judge prompts from a table keyed by (answer A, answer B); records every request."""

    fingerprint = "judge"
    batch_size = 8

    def __init__(self, replies: dict[tuple[str, str], str]) -> None:
        self.replies = replies
        self.calls: list[tuple[int, SamplingSettings]] = []

    def render(self, request: ChatRequest) -> str:
        return request.messages[-1]["content"]

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        self.calls.append((len(requests), params))
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            a = re.search(r"<answer_a>\n(.*?)\n</answer_a>", text, re.S).group(1)
            b = re.search(r"<answer_b>\n(.*?)\n</answer_b>", text, re.S).group(1)
            out.append(self.replies[(a, b)])
        return out


def _scripted(verdicts: dict[str, tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Item id → (reply with output as A, reply with output as B), as an engine table."""
    table = {}
    for id_, (ab, ba) in verdicts.items():
        table[(f"out{id_}", f"ref{id_}")] = ab
        table[(f"ref{id_}", f"out{id_}")] = ba
    return table


FIXED = {
    "1": ("Winner: A", "Winner: B"),  # consistent win → 1
    "2": ("Winner: B", "Winner: A"),  # consistent loss → 0
    "3": ("Winner: tie", "Winner: tie"),  # tie → 0.5
    "4": ("Winner: A", "Winner: A"),  # position bias, order-inconsistent → 0.5
    "5": ("no idea", "Reasoning...\nWinner: B"),  # one order unparseable → the other's win → 1
    "6": ("hmm", "no verdict"),  # both unparseable → invalid
    "7": ("Winner: A", "Winner: tie"),  # win + tie → 0.75 (a win in the counts)
    "8": ("Winner: B", "Winner: B"),  # es, order-inconsistent → 0.5
}


def _items() -> list[JudgeItem]:
    return [JudgeItem(id_, "es" if id_ == "8" else "de", f"instr{id_}", f"out{id_}", f"ref{id_}") for id_ in FIXED]


def test_judge_scores_both_orders(tmp_path):
    engine = JudgeEngine(_scripted(FIXED))
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    judgements = judge(gen, _items())
    assert engine.calls == [(16, JUDGE_SAMPLING)]  # one batched call, both orders of every item
    by_id = {j.id: j for j in judgements}
    assert [j.id for j in judgements] == list(FIXED)
    assert (by_id["1"].verdict_ab, by_id["1"].verdict_ba) == ("A", "B")
    assert {id_: j.score for id_, j in by_id.items()} == {
        "1": 1.0,
        "2": 0.0,
        "3": 0.5,
        "4": 0.5,
        "5": 1.0,
        "6": None,
        "7": 0.75,
        "8": 0.5,
    }
    assert by_id["6"].invalid and by_id["5"].verdict_ab is None and by_id["5"].raw_ab == "no idea"

    rates = win_rates(judgements)
    de, es, avg = rates["de"], rates["es"], rates["average"]
    assert de["win_rate"] == pytest.approx((1 + 0 + 0.5 + 0.5 + 1 + 0.75) / 6)
    assert (de["n"], de["wins"], de["ties"], de["losses"], de["invalid"]) == (6, 3, 2, 1, 1)
    assert (es["win_rate"], es["n"], es["ties"]) == (0.5, 1, 1)
    assert es["win_rate_ci_low"] == es["win_rate_ci_high"] == 0.5  # one item: every resample is that item
    assert avg["win_rate"] == pytest.approx((de["win_rate"] + 0.5) / 2)  # macro average over languages
    assert (avg["n"], avg["wins"], avg["ties"], avg["losses"], avg["invalid"]) == (7, 3, 3, 1, 1)
    assert list(rates) == ["de", "es", "average"]

    again = judge(Generator(engine, GenerationCache(tmp_path / "c.sqlite")), _items())
    assert again == judgements and len(engine.calls) == 1  # cached: the judge is not asked twice


def test_judge_passes_params_through(tmp_path):
    engine = JudgeEngine(_scripted({"1": ("Winner: A", "Winner: B")}))
    params = SamplingSettings(max_new_tokens=64)
    judge(Generator(engine, GenerationCache(tmp_path / "c.sqlite")), _items()[:1], params)
    assert engine.calls == [(2, params)]


def _judgements(scores: list[float | None], lang: str = "de") -> list[Judgement]:
    return [Judgement(str(i), lang, None, None, s) for i, s in enumerate(scores)]


def test_bootstrap_is_reproducible_and_contains_the_estimate():
    scores = [1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.75, 0.25, 1.0, 0.0] * 5
    js = _judgements(scores) + _judgements([0.0, 1.0, 1.0], "fr")
    a, b = win_rates(js, seed=3), win_rates(js, seed=3)
    assert a == b
    assert win_rates(js, seed=4)["de"] != a["de"]
    for entry in a.values():
        assert entry["win_rate_ci_low"] <= entry["win_rate"] <= entry["win_rate_ci_high"]
    assert a["de"]["win_rate_ci_high"] - a["de"]["win_rate_ci_low"] > 0.1
    # A language's interval does not depend on which other languages were judged.
    assert win_rates(_judgements(scores), seed=3)["de"] == a["de"]


def test_win_rates_all_invalid_and_all_wins():
    rates = win_rates(_judgements([None, None]) + _judgements([1.0, 1.0, 1.0], "fr"))
    assert rates["de"]["n"] == 0 and rates["de"]["invalid"] == 2
    assert rates["de"]["win_rate"] != rates["de"]["win_rate"]  # nan
    assert (rates["fr"]["win_rate"], rates["fr"]["win_rate_ci_low"], rates["fr"]["win_rate_ci_high"]) == (1.0, 1.0, 1.0)
    assert rates["average"]["win_rate"] == 1.0 and rates["average"]["invalid"] == 2  # de has no valid rate
    empty = win_rates([])
    assert list(empty) == ["average"] and empty["average"]["n"] == 0


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


def test_items_vs_reference_joins_on_id_or_instruction(tmp_path):
    _write(
        tmp_path / "ref-de.json",
        [
            {"generator": "gpt4", "dataset": "d", "id": 1, "instruction": "Frage eins", "output": "Ref eins"},
            {"generator": "gpt4", "dataset": "d", "id": 2, "instruction": "Frage zwei", "output": "Ref zwei"},
        ],
    )
    # The English reference file of X-AlpacaEval has no ids: it joins on the instruction.
    _write(tmp_path / "ref-en.json", [{"generator": "gpt4", "dataset": "d", "instruction": "Q two", "output": "R2"}])
    outputs = [
        Response(id="2", lang="de", prompt="Frage zwei", output="Antwort"),
        {"id": 7, "lang": "en", "instruction": "Q two", "output": "A2"},
    ]
    items = items_vs_reference(outputs, str(tmp_path / "ref-{lang}.json"))
    assert items == [
        JudgeItem("2", "de", "Frage zwei", "Antwort", "Ref zwei"),
        JudgeItem("7", "en", "Q two", "A2", "R2"),
    ]
    with pytest.raises(PolyriseError, match=r"ref-de\.json: no reference answer for id '9'"):
        items_vs_reference(
            [{"id": 9, "lang": "de", "instruction": "x", "output": "y"}], str(tmp_path / "ref-{lang}.json")
        )
    mismatch = [{"id": 1, "lang": "de", "instruction": "Frage zwei", "output": "y"}]
    with pytest.raises(PolyriseError, match="instruction differs"):
        items_vs_reference(mismatch, str(tmp_path / "ref-{lang}.json"))
    assert (
        items_vs_reference(mismatch, str(tmp_path / "ref-{lang}.json"), check_instructions=False)[0].other == "Ref eins"
    )
    with pytest.raises(PolyriseError, match=r"ref-fr\.json: no such file"):
        items_vs_reference(
            [{"id": 1, "lang": "fr", "instruction": "x", "output": "y"}], str(tmp_path / "ref-{lang}.json")
        )


def test_items_head_to_head():
    new = [
        Response(id="1", lang="de", prompt="F1", output="neu1"),
        Response(id="1", lang="fr", prompt="Q1", output="nouveau1"),
    ]
    old = [
        {"id": "1", "lang": "fr", "instruction": "Q1", "output": "ancien1"},
        {"id": 1, "lang": "de", "instruction": "F1", "output": "alt1"},
    ]
    assert items_head_to_head(new, old) == [
        JudgeItem("1", "de", "F1", "neu1", "alt1"),
        JudgeItem("1", "fr", "Q1", "nouveau1", "ancien1"),
    ]
    with pytest.raises(PolyriseError, match=r"1 only in a .*\('1', 'fr'\).*0 only in b"):
        items_head_to_head(new, old[1:])
    with pytest.raises(PolyriseError, match="duplicate"):
        items_head_to_head(new + new[:1], old)


def test_alpaca_eval_outputs_round_trip(tmp_path):
    rows = [
        Response(id="1", lang="de", prompt="Frage", output="Antwort mit ü"),
        Response(id="2", lang="de", prompt="Noch eine", output="Zweite"),
        Response(id="1", lang="fr", prompt="Question", output="Réponse"),
    ]
    written = write_alpaca_eval_outputs(tmp_path / "{lang}" / "model_outputs.json", rows, "polyrise-m1")
    assert written == [tmp_path / "de" / "model_outputs.json", tmp_path / "fr" / "model_outputs.json"]
    data = json.loads(written[0].read_text(encoding="utf-8"))
    assert data[0] == {
        "instruction": "Frage",
        "output": "Antwort mit ü",
        "generator": "polyrise-m1",
        "dataset": "x-alpacaeval",
        "id": "1",
    }
    assert list(data[0]) == ["instruction", "output", "generator", "dataset", "id"]
    template = str(tmp_path / "{lang}" / "model_outputs.json")
    assert load_alpaca_eval_outputs(template, ["de", "fr"]) == rows
    assert [p.instruction for p in load_instructions(template, ["de"])] == ["Frage", "Noch eine"]
    # Written files serve as the reference of another run; a row's own `dataset` is kept.
    single = write_alpaca_eval_outputs(tmp_path / "one.json", [{**rows[2].model_dump(), "dataset": "oasst"}], "g")
    assert json.loads(single[0].read_text(encoding="utf-8"))[0]["dataset"] == "oasst"
    assert items_vs_reference(rows[:1], template)[0].other == "Antwort mit ü"
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_load_instructions_jsonl_limits_and_errors(tmp_path):
    plain = tmp_path / "p.jsonl"
    plain.write_text('{"id": "a", "instruction": "one"}\n\n{"id": 2, "instruction": "two"}\n', encoding="utf-8")
    assert [(p.id, p.lang, p.instruction) for p in load_instructions(plain, ["de"])] == [
        ("a", "de", "one"),
        ("2", "de", "two"),
    ]
    assert len(load_instructions(plain, ["de"], limit=1)) == 1
    with pytest.raises(PolyriseError, match=r"p\.jsonl:1: lang: Field required"):
        load_instructions(plain, ["de", "fr"])

    mixed = tmp_path / "m.jsonl"
    mixed.write_text(
        "\n".join(json.dumps({"id": i, "lang": lang, "instruction": f"{lang}{i}"}) for i in range(3) for lang in "xy"),
        encoding="utf-8",
    )
    got = load_instructions(mixed, ["y"], limit=2)
    assert [(p.id, p.lang) for p in got] == [("0", "y"), ("1", "y")]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "instruction": "ok"}\n{"instruction": "no id"}\n', encoding="utf-8")
    with pytest.raises(PolyriseError, match=r"bad\.jsonl:2: id: Field required"):
        load_instructions(bad, ["de"])
    bad.write_text('{"id": 1, "instruction": "ok"}\n{"id": 2, "instruction": ', encoding="utf-8")
    with pytest.raises(PolyriseError, match=r"bad\.jsonl:2: invalid JSON"):
        load_instructions(bad, ["de"])
    array = tmp_path / "de.json"
    _write(array, [{"id": 1, "instruction": "ok"}, {"id": 2, "instruction": ""}])
    with pytest.raises(PolyriseError, match=r"de\.json: item 1: instruction: an instruction must not be blank"):
        load_instructions(tmp_path / "{lang}.json", ["de"])
    _write(array, [{"id": 1, "instruction": "ok"}, {"id": 1, "instruction": "again"}])
    with pytest.raises(PolyriseError, match=r"item 1: duplicate id '1'"):
        load_instructions(tmp_path / "{lang}.json", ["de"])


@pytest.mark.skipif(not (SHARED / "x-alpacaeval").is_dir(), reason="shared X-AlpacaEval data not present")
def test_real_x_alpacaeval_against_gpt4_turbo_reference():
    prompts = load_instructions(str(SHARED / "x-alpacaeval" / "{lang}.json"), ["de", "en"], limit=5)
    assert len(prompts) == 10 and {p.lang for p in prompts} == {"de", "en"}
    outputs = [{"id": p.id, "lang": p.lang, "instruction": p.instruction, "output": "mine"} for p in prompts]
    items = items_vs_reference(outputs, str(SHARED / "x-alpacaeval-gpt4-turbo" / "{lang}.json"))
    assert len(items) == 10 and all(it.other and it.output == "mine" for it in items)
    refs = load_alpaca_eval_outputs(str(SHARED / "x-alpacaeval-gpt4-turbo" / "{lang}.json"), ["de"])
    assert len(refs) == 805 and refs[0].id == "1"


def test_evaluate_model_judges_head_to_head_against_a_baseline_in_another_dir(tmp_path, monkeypatch):
    """M1 is judged against M0's answers in M0's own eval dir; the judge is opened once and only when it judges."""
    from engines import ScriptedEngine

    from polyrise import evaluation
    from polyrise.evaluation import evaluate_model, parse_task

    source = tmp_path / "{lang}.json"
    for lang in ("de", "es"):
        _write(Path(str(source).replace("{lang}", lang)), [{"id": 1, "instruction": f"q1 {lang}"}])
    task = parse_task({"task": "judge", "source": str(source), "name": "h2h", "judge": {"model": "any"}})
    opened: list[str | None] = []
    table = {("new de", "old de"): "Winner: A", ("old de", "new de"): "Winner: B"}  # M1 wins in de
    table |= {("new es", "old es"): "Winner: B", ("old es", "new es"): "Winner: A"}  # and loses in es

    def open_engine(settings):
        opened.append(settings.model)
        return JudgeEngine(table)

    monkeypatch.setattr(evaluation, "open_engine", open_engine)
    cache = GenerationCache(tmp_path / "c.sqlite")
    m0 = Generator(ScriptedEngine({"q1 de": "old de", "q1 es": "old es"}), cache)
    m1 = Generator(ScriptedEngine({"q1 de": "new de", "q1 es": "new es"}), cache)
    m1.engine.fingerprint = "scripted M1"  # another model: other cache keys
    dir0, dir1 = tmp_path / "iter_0" / "eval", tmp_path / "iter_1" / "eval"

    assert evaluate_model([task], m0, ["de", "es"], dir0, "M0") == {"h2h": {}}  # nothing to judge against
    assert opened == [] and (dir0 / "h2h_M0.jsonl").is_file()
    scores = evaluate_model([task, task], m1, ["de", "es"], dir1, "M1", baseline=(dir0, "M0"))
    assert opened == ["any"]  # one judge for both tasks
    assert scores["h2h"]["de"]["win_rate"] == 1.0 and scores["h2h"]["es"]["win_rate"] == 0.0
    judgements = [json.loads(line) for line in (dir1 / "h2h_M1_judgements.jsonl").read_text().splitlines()]
    assert [(j["lang"], j["score"]) for j in judgements] == [("de", 1.0), ("es", 0.0)]
    outputs = json.loads((dir1 / "h2h_M1" / "de" / "model_outputs.json").read_text())
    assert [(o["output"], o["generator"]) for o in outputs] == [("new de", "M1")]
    assert not (dir1 / "h2h_M0.jsonl").exists()  # the baseline's rows stay where they are
