"""The sandbox's data: the imbalanced training mix (`DataMix`) and its example builders, the held-out splits, and
the rows of the data files a build writes (MGSM-format eval, parallel translation texts, pipeline prompts).

The M0 model is trained on many English task examples, translation examples in both directions for every clone
written in polyrise's own self-translation protocol (`templates.translation_prompt`, answer
`<translated>\\n…</translated>`), and few task examples in the clones.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from polyrise.sandbox.world import SOURCE_LANG, Clone, Problem, render, sample_problems
from polyrise.templates import TRANSLATION_PREFIX, math_prompt, translation_prompt


@dataclass(frozen=True)
class DataMix:
    """How many training examples of each kind the M0 model sees (the knobs of the language imbalance)."""

    english_task: int = 2500
    """English problems answered in English."""
    clone_task: int = 10
    """Problems answered in each clone (few: this is the imbalance)."""
    translation: int = 1200
    """Translation examples per clone and direction (half questions, half answers)."""
    wrapped: float = 0.5
    """Share of task examples whose question is wrapped in polyrise's MGSM instruction (`templates.math_prompt`), the
    form the exact scorer asks in; the rest are bare questions, the form the pipeline's prompts take."""


@dataclass(frozen=True)
class Sizes:
    """Held-out sets: evaluation problems per language, translation test texts, pipeline prompts."""

    eval: int = 200
    translation_test: int = 60
    prompts: int = 500


@dataclass
class Example:
    kind: str
    messages: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class Splits:
    """A build's problems: the held-out sets (no question in two of them) and the training problems after them."""

    eval: list[Problem]
    translation_test: list[Problem]
    prompts: list[Problem]
    train: list[Problem]


def draw_splits(rng: random.Random, sizes: Sizes, mix: DataMix, n_clones: int) -> Splits:
    """The held-out splits first, then the training problems (which may repeat among themselves, never a held-out
    question)."""
    seen: set[str] = set()
    eval_problems = sample_problems(rng, sizes.eval, seen)
    test_problems = sample_problems(rng, sizes.translation_test, seen)
    prompt_problems = sample_problems(rng, sizes.prompts, seen)
    train_problems = sample_problems(rng, n_training_problems(mix, n_clones), seen, unique=False)
    return Splits(eval_problems, test_problems, prompt_problems, train_problems)


def _chat(user: str, assistant: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": user}, {"role": "assistant", "content": assistant})


def translation_example(text_src: str, text_tgt: str, src: str, tgt: str) -> tuple[dict[str, str], ...]:
    """A chat in polyrise's self-translation protocol: instruction + `<sentence>` → `<translated>\\n…</translated>`."""
    return _chat(translation_prompt(text_src, src, tgt), f"{TRANSLATION_PREFIX}{text_tgt}</translated>")


def training_examples(
    problems: Sequence[Problem], mix: DataMix, clones: dict[str, Clone], rng: random.Random
) -> list[Example]:
    """The M0 training mix, shuffled; `problems` must hold at least `mix`'s total of problems."""
    it = iter(problems)

    def task(lang: str) -> Example:
        p = next(it)
        q, a = render(p.question, lang, clones), render(p.answer, lang, clones)
        user = math_prompt(q, lang) if rng.random() < mix.wrapped else q
        return Example(f"task-{lang}", _chat(user, a))

    examples = [task(SOURCE_LANG) for _ in range(mix.english_task)]
    for code in clones:
        examples += [task(code) for _ in range(mix.clone_task)]
        for src, tgt in ((SOURCE_LANG, code), (code, SOURCE_LANG)):
            for i in range(mix.translation):
                p = next(it)
                text = p.question if i % 2 == 0 else p.answer
                examples.append(
                    Example(
                        f"translate-{src}-{tgt}",
                        translation_example(render(text, src, clones), render(text, tgt, clones), src, tgt),
                    )
                )
    rng.shuffle(examples)
    return examples


def n_training_problems(mix: DataMix, n_clones: int) -> int:
    return mix.english_task + n_clones * (mix.clone_task + 2 * mix.translation)


def eval_rows(problems: Sequence[Problem], lang: str, world: dict[str, Clone]) -> list[dict[str, str]]:
    """MGSM JSONL rows (`query`, `response`: the integer answer), aligned across languages by row."""
    return [{"query": render(p.question, lang, world), "response": str(p.n)} for p in problems]


def translation_rows(problems: Sequence[Problem], lang: str, world: dict[str, Clone]) -> list[dict[str, str]]:
    """Held-out texts for translation tests: each problem's question and its answer, aligned by `id`."""
    rows = []
    for i, p in enumerate(problems):
        rows.append({"id": f"q{i}", "instruction": render(p.question, lang, world)})
        rows.append({"id": f"a{i}", "instruction": render(p.answer, lang, world)})
    return rows


def prompt_rows(problems: Sequence[Problem]) -> list[dict[str, str]]:
    """English task prompts (`id`, `instruction`, `answer`: the gold number) for `polyrise run`."""
    return [{"id": f"sandbox-{i}", "instruction": p.question, "answer": str(p.n)} for i, p in enumerate(problems)]


def tokenizer_corpus(
    examples: Sequence[Example], splits: Splits, langs: Sequence[str], world: dict[str, Clone]
) -> list[str]:
    """Every text the sandbox writes: the training chats, and each held-out question and answer in every language."""
    corpus = [m["content"] for e in examples for m in e.messages]
    for p in (*splits.eval, *splits.translation_test, *splits.prompts):
        corpus += [render(text, lang, world) for lang in langs for text in (p.question, p.answer)]
    return corpus
