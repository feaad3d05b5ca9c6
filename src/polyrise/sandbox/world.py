"""The sandbox's world: templated arithmetic word problems in English, and the cloned languages `qaa`, `qab`.

The task: "Tom has 3 apples. Tom buys 4 more apples. How many apples does Tom have now?" → "3 + 4 = 7. Tom has 7
apples.", scored by the final integer of the answer. The languages: English and cloned languages after Schäfer et
al. 2024 ("The Role of Language Imbalance in Cross-lingual Generalisation"): a clone keeps English grammar but writes
every word (names too) as its own pseudo-word, so a clone shares nothing with English on the surface but digits and
punctuation. Clone `qab` also reverses the word order of every sentence, so translating it is not a token-by-token
map.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from polyrise.errors import PolyriseError
from polyrise.templates import math_prompt, translation_prompt

SOURCE_LANG = "en"

WordOrder = Literal["same", "reversed"]

CLONES: dict[str, WordOrder] = {"qaa": "same", "qab": "reversed"}
"""The cloned languages (codes of `polyrise.languages`, ISO 639 private-use range) and their word order:
`same` is English word order (a pure word map); `reversed` reverses every sentence's words (end punctuation stays)."""

NAMES = ("Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Leo", "Nora")
OBJECTS = ("apples", "pears", "books", "pens", "cups", "coins", "shells", "eggs")


@dataclass(frozen=True)
class Template:
    """A problem family: question and answer text with `{a}`, `{b}` (names), `{obj}`, `{x}`, `{y}`, `{n}`."""

    question: str
    answer: str
    op: Literal["+", "-"]


TEMPLATES = (
    Template(
        "{a} has {x} {obj}. {a} buys {y} more {obj}. How many {obj} does {a} have now?", "{a} has {n} {obj}.", "+"
    ),
    Template(
        "{a} has {x} {obj}. {a} gives {y} {obj} to {b}. How many {obj} does {a} have now?", "{a} has {n} {obj}.", "-"
    ),
    Template(
        "{a} has {x} {obj} and {b} has {y} {obj}. How many {obj} do they have together?", "They have {n} {obj}.", "+"
    ),
    Template(
        "{a} has {x} {obj}. {b} has {y} more {obj} than {a}. How many {obj} does {b} have?", "{b} has {n} {obj}.", "+"
    ),
    Template(
        "{a} has {x} {obj}. {b} has {y} fewer {obj} than {a}. How many {obj} does {b} have?", "{b} has {n} {obj}.", "-"
    ),
)
MAX_STEP = 5
"""Addition: `x` and `y` from 1..MAX_STEP. Subtraction: `x` from 2..2*MAX_STEP, `y` from 1..MAX_STEP and below `x`,
so every answer is a positive integer below 2*MAX_STEP+1 and the arithmetic is single-digit facts."""


@dataclass(frozen=True)
class Problem:
    template: int
    a: str
    b: str
    obj: str
    x: int
    y: int

    @property
    def n(self) -> int:
        return self.x + self.y if TEMPLATES[self.template].op == "+" else self.x - self.y

    def _fill(self, text: str, n: int | None = None) -> str:
        return text.format(
            a=self.a,
            b=self.b,
            obj=self.obj,
            x=self.x,
            y=self.y,
            n=self.n if n is None else n,
            op=TEMPLATES[self.template].op,
        )

    @property
    def question(self) -> str:
        return self._fill(TEMPLATES[self.template].question)

    @property
    def answer(self) -> str:
        """The worked answer: the equation, then a sentence ending in the result ("3 + 4 = 7. Tom has 7 apples.")."""
        return self.worked(self.n)

    def worked(self, result: int) -> str:
        """The worked answer with `result` in place of the right one (a wrong answer, for preference pairs)."""
        return self._fill("{x} {op} {y} = {n}. " + TEMPLATES[self.template].answer, result)


def sample_problem(rng: random.Random) -> Problem:
    t = rng.randrange(len(TEMPLATES))
    a, b = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    if TEMPLATES[t].op == "+":
        x, y = rng.randint(1, MAX_STEP), rng.randint(1, MAX_STEP)
    else:
        x = rng.randint(2, 2 * MAX_STEP)
        y = rng.randint(1, min(MAX_STEP, x - 1))
    return Problem(t, a, b, obj, x, y)


def sample_problems(rng: random.Random, n: int, seen: set[str], *, unique: bool = True) -> list[Problem]:
    """`n` problems whose questions are not in `seen`. With `unique`, their questions are distinct and join `seen`,
    so held-out splits never share a question with each other or with what is drawn after them."""
    out: list[Problem] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 100 * n + 1000:
            raise PolyriseError(f"cannot draw {n} distinct problems")
        p = sample_problem(rng)
        if p.question not in seen:
            if unique:
                seen.add(p.question)
            out.append(p)
    return out


# ---------------------------------------------------------------------------------------------------
# Cloned languages
# ---------------------------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z]+")
_SENTENCE = re.compile(r"[^.?!]+[.?!]")
_TOKEN = re.compile(r"[0-9]+(?: [-+=] [0-9]+)+|[0-9]+|[A-Za-z]+|[^\sA-Za-z0-9]")
"""Units of word order: an equation ("3 + 4 = 7", kept whole), a number, a word, a punctuation mark."""


def english_words() -> list[str]:
    """Every word of the task texts, lower-cased (names included), in a fixed order."""
    words = {w.lower() for t in TEMPLATES for text in (t.question, t.answer) for w in _WORD.findall(_strip_slots(text))}
    words |= {n.lower() for n in NAMES} | set(OBJECTS)
    return sorted(words)


def _strip_slots(text: str) -> str:
    return re.sub(r"\{[a-z]+\}", " ", text)


def _instruction_words() -> set[str]:
    """Lower-cased words of the fixed instructions (translation and math prompts) that clones must not reuse."""
    from polyrise.languages import get_language

    texts = [translation_prompt("", SOURCE_LANG, SOURCE_LANG), math_prompt("", SOURCE_LANG)]
    texts += [get_language(code).name for code in (SOURCE_LANG, *CLONES)]
    return {w.lower() for text in texts for w in _WORD.findall(text)}


_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.choice((2, 2, 3))))


@dataclass(frozen=True)
class Clone:
    """A cloned language: English grammar, its own word for every English word, and a word order."""

    code: str
    order: WordOrder
    lexicon: dict[str, str]
    """lower-cased English word → clone word (names capitalised)."""

    def render(self, text: str) -> str:
        """The clone's version of an English sandbox text (sentences ending in `.`, `?` or `!`)."""
        sentences = _SENTENCE.findall(text)
        if "".join(sentences).replace(" ", "") != text.replace(" ", ""):
            raise PolyriseError(f"not a sandbox text (sentences ending in punctuation): {text!r}")
        out = []
        for sentence in sentences:
            *body, end = _TOKEN.findall(sentence)
            words = [self.lexicon[t.lower()] if t[0].isalpha() else t for t in body]
            if self.order == "reversed":
                words.reverse()
            out.append(" ".join(words) + end)
        return " ".join(out)


def make_clones(codes: Sequence[str] = tuple(CLONES)) -> dict[str, Clone]:
    """The clones' lexicons: fixed pseudo-words (independent of the build seed), unique across all languages."""
    words = english_words()
    taken = set(words) | _instruction_words()
    clones = {}
    for code in codes:
        if code not in CLONES:
            raise PolyriseError(f"unknown clone {code!r}; known: {', '.join(CLONES)}")
        rng = random.Random(f"polyrise-sandbox-clone-{code}")
        lexicon = {}
        for word in words:
            new = _pseudo_word(rng)
            while new in taken:
                new = _pseudo_word(rng)
            taken.add(new)
            lexicon[word] = new.capitalize() if word.capitalize() in NAMES else new
        clones[code] = Clone(code, CLONES[code], lexicon)
    return clones


def render(text: str, lang: str, clones: dict[str, Clone]) -> str:
    """An English sandbox text in `lang` (English itself or a clone)."""
    return text if lang == SOURCE_LANG else clones[lang].render(text)
