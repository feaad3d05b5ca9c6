"""Language identification: the one detector for every place that judges a text's language (held-out answers,
MGSM answers, the pairs' `wrong_language` filter, `polyrise score langid`), after the Language Confusion
Benchmark (Marchisio et al. 2024, arXiv 2406.20052; for-ai/language-confusion `compute_metrics.py`).

A response is cleaned of what carries no language (fenced and inline code, URLs, e-mail addresses, markup,
table rules, numbers, formulas), split into lines (table cells count as lines); lines of fewer than
`min_words` words are skipped, and so are lines of mostly capitalised words (lists of names, titles,
citations). Each remaining line is identified by py3langid (bundled model, offline) restricted to a candidate
set: the expected language, English, the run's languages and `LangIdSettings.candidates`; a line whose best
probability is under `min_confidence` is undecided. The response is off target when any decided line is in another
language; it cannot be told when no line is decided. A language py3langid has no model for (the sandbox's
clones) is not measurable: its verdicts are all None, never a rate.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from polyrise.languages import LANGUAGES
from polyrise.settings import MAX_COUNT, Section

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier


DEFAULT_CANDIDATES = ("en", "zh", "es", "fr", "de", "ru", "pt", "it", "ja", "ko", "ar", "hi")
"""The languages answers most often drift into; close relatives outside the run (Occitan for French, Serbian for
Russian, ...) stay out, since on a single line py3langid confuses them with the expected language."""


class LangIdSettings(Section):
    """How the detector judges a text (`langid:` in a run config; `polyrise score langid` options)."""

    min_words: int = Field(default=5, ge=0, le=MAX_COUNT)
    """Words a line needs to be identified (the LCB's 5; Han and kana count a word per 1.5 characters, Thai per 4);
    shorter lines are skipped, counted."""
    min_confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    """A line whose best candidate has a lower probability is undecided: neither on nor off target."""
    candidates: list[str] = Field(default_factory=lambda: list(DEFAULT_CANDIDATES))
    """Languages a line may be identified as, besides the expected one, English and the run's languages."""

    @field_validator("candidates")
    @classmethod
    def _identifiable(cls, codes: list[str]) -> list[str]:
        unknown = [code for code in codes if not measurable(code)]
        if unknown:
            raise ValueError(f"py3langid cannot identify {', '.join(unknown)}; it knows {', '.join(_labels())}")
        return codes


@dataclass(frozen=True)
class Line:
    """One identified line of a response: its cleaned text, the language (None: undecided) and its probability."""

    text: str
    lang: str | None
    prob: float


@dataclass(frozen=True)
class Verdict:
    """A response's language, judged line by line."""

    off_target: bool | None
    """A decided line is in another language; None when no line is decided or the language is not measurable."""
    lines: tuple[Line, ...]
    skipped_lines: int
    """Lines too short to identify, or names only."""
    english_words: tuple[str, ...] | None = None
    """English dictionary words of the decided lines (the LCB's word-level confusion); None for a language in
    Latin script, where the LCB finds the measure unreliable."""


@cache
def _base_identifier() -> LanguageIdentifier:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@cache
def _labels() -> tuple[str, ...]:
    return tuple(code for code in _base_identifier().labels if code != "zxx")


def measurable(lang: str) -> bool:
    """Whether the detector can identify `lang` (py3langid has a model for it)."""
    return lang in _labels()


def word_level(lang: str) -> bool:
    """Whether word-level confusion (English words) is measured for `lang`: a language not in Latin script."""
    return lang in LANGUAGES and LANGUAGES[lang].script != "Latn"


@cache
def _identifier(candidates: tuple[str, ...]) -> LanguageIdentifier:
    """A py3langid identifier restricted to `candidates` (a copy: the full model is shared, not mutated)."""
    restricted = copy.copy(_base_identifier())
    restricted.set_languages(candidates)
    return restricted


@cache
def _english_words() -> frozenset[str]:
    """The LCB's English word list: web2 (the Unix `words` file), lower-case words of more than 3 letters."""
    from english_words import get_english_words_set

    return frozenset(w for w in get_english_words_set(["web2"], alpha=True) if w.islower() and len(w) > 3)


_FENCED = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_FORMULA = re.compile(r"\$\$.*?\$\$|\\\[.*?\\\]|\\\(.*?\\\)|\$[^$\n]+\$", re.S)
_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+|[\w.+-]+@[\w-]+\.[\w.]+", re.I)
_TAG = re.compile(r"</?[A-Za-z][^>\n]*>|&[a-z]+;")
_TABLE_RULE = re.compile(r"^[ \t|:+=-]*-{3,}[ \t|:+=-]*$", re.M)
_LATEX = re.compile(r"\\[A-Za-z]+")
_CODE_TOKEN = re.compile(r"\S*(?:\d|_|[a-z][A-Z]|[=<>{}\[\]\\^|~#@$%&*/+])\S*")
_BULLET = re.compile(r"^\s*(?:[-*+•·‣◦▪]|\(?[0-9ivxIVX]+[.)])\s+")
_HAN = ("CJK", "HIRAGANA", "KATAKANA")
_SOUTHEAST_ASIAN = ("THAI", "LAO", "KHMER", "MYANMAR")


def clean_lines(text: str) -> list[str]:
    """The lines of `text` that may carry language: code, formulas, URLs, markup, table rules, numbers gone."""
    for pattern in (_FENCED, _FORMULA, _INLINE_CODE, _URL, _TAG, _TABLE_RULE):
        text = pattern.sub(" ", text)
    lines = []
    for raw in text.replace("|", "\n").splitlines():
        line = _BULLET.sub("", raw.replace("**", " ").replace("__", " "))
        line = _CODE_TOKEN.sub(" ", _LATEX.sub(" ", line))
        line = " ".join(line.split())
        if line:
            lines.append(line)
    return lines


def _names_only(line: str) -> bool:
    """Mostly capitalised words (3 in 4): a list of names, a title, a citation; it carries no language of its own."""
    bare = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in line)
    words = [w for w in bare.split() if any(ch.isalpha() for ch in w)]
    return bool(words) and sum(w[0].isupper() for w in words) >= 0.75 * len(words)


def _words(line: str) -> float:
    """Words in `line`: whitespace tokens, and for scripts written without spaces 1 per 1.5 (Han, kana) or
    4 (Thai, Lao, Khmer, Myanmar) characters, roughly what a word segmenter would find."""
    unspaced = 0.0
    for ch in line:
        name = unicodedata.name(ch, "")
        if name.startswith(_HAN):
            unspaced += 1 / 1.5
        elif name.startswith(_SOUTHEAST_ASIAN):
            unspaced += 1 / 4
    spaced = sum(1 for w in line.split() if not unicodedata.name(w[0], "").startswith(_HAN + _SOUTHEAST_ASIAN))
    return spaced + unspaced


def judge(text: str, lang: str, settings: LangIdSettings, others: Sequence[str] = ()) -> Verdict:
    """Judge `text`, expected in `lang`, line by line among `lang`, English, `others` and the settings' candidates."""
    if not measurable(lang):
        return Verdict(None, (), 0)
    candidates = tuple(sorted({lang, "en", *(c for c in others if measurable(c)), *settings.candidates}))
    identifier = _identifier(candidates)
    lines: list[Line] = []
    skipped = 0
    for line in clean_lines(text):
        if _words(line) < max(settings.min_words, 1) or _names_only(line):
            skipped += 1
            continue
        code, prob = identifier.classify(line)
        lines.append(Line(line, code if prob >= settings.min_confidence else None, float(prob)))
    decided = [line.lang for line in lines if line.lang is not None]
    off_target = any(code != lang for code in decided) if decided else None
    english = None
    if word_level(lang):
        vocabulary = _english_words()
        english = tuple(w for line in lines for w in re.findall(r"[A-Za-z]+", line.text) if w in vocabulary)
    return Verdict(off_target, tuple(lines), skipped, english)


def matches_language(text: str, lang: str, settings: LangIdSettings, others: Sequence[str] = ()) -> bool | None:
    """Whether `text` is in `lang` (every decided line is); None when it cannot be told."""
    verdict = judge(text, lang, settings, others).off_target
    return None if verdict is None else not verdict
