"""Self-translation: the model translates tagged text; failures are `None`, counted, never kept."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from polyrise.generation import ChatRequest, Generator
from polyrise.records import Prompt, Response, Translation
from polyrise.settings import SamplingSettings, TranslationTemplate
from polyrise.templates import TRANSLATION_PREFIX, translation_prompt

_OPEN = re.compile(r"<translated>", re.IGNORECASE)
_CLOSE = "</translated>"
_CLOSE_RE = re.compile(re.escape(_CLOSE), re.IGNORECASE)
_STRAY_TAGS = re.compile(r"</?(?:sentence|translated)>", re.IGNORECASE)
_MARKUP = re.compile(r"<[^<>\n]*>")


def extract_translation(text: str) -> str | None:
    """Text between `<translated>` and `</translated>` (any case); a missing closing tag is tolerated at the end.

    Returns None when there is no opening tag, or nothing but whitespace and markup inside.
    """
    start = _OPEN.search(text)
    if start is None:
        return None
    body = text[start.end() :]
    end = _CLOSE_RE.search(body)
    if end is not None:
        body = body[: end.start()]
    else:
        # Without a closing tag, a new tag means the model went on to something else.
        stray = _STRAY_TAGS.search(body)
        if stray:
            body = body[: stray.start()]
    body = _STRAY_TAGS.sub("", body).strip()
    if not any(ch.isalpha() or ch.isdigit() for ch in _MARKUP.sub("", body)):
        return None
    return body


@dataclass(frozen=True)
class TranslationJob:
    id: str
    kind: Literal["prompt", "response"]
    src_lang: str
    lang: str
    text: str


def translate(
    generator: Generator,
    jobs: Sequence[TranslationJob],
    params: SamplingSettings,
    desc: str = "translating",
    template: TranslationTemplate = "polyrise",
) -> list[Translation]:
    """Self-translate every job with the generator's model, asked with `template`'s instruction; `output` is None
    where extraction failed."""
    params = params.model_copy(update={"stop": sorted({*params.stop, _CLOSE})})
    requests = [
        ChatRequest.user(translation_prompt(j.text, j.src_lang, j.lang, template), prefix=TRANSLATION_PREFIX)
        for j in jobs
    ]
    raws = generator.generate(requests, params, desc=desc)
    return [
        Translation(
            id=j.id,
            kind=j.kind,
            src_lang=j.src_lang,
            lang=j.lang,
            source=j.text,
            output=extract_translation(TRANSLATION_PREFIX + raw),
            raw=raw,
        )
        for j, raw in zip(jobs, raws, strict=True)
    ]


def translate_prompts(
    generator: Generator,
    prompts: Sequence[Prompt],
    languages: Sequence[str],
    params: SamplingSettings,
    template: TranslationTemplate = "polyrise",
) -> tuple[list[Prompt], list[Translation]]:
    """Self-translate source prompts into every language; returns source + translated prompts, and all attempts."""
    jobs = [TranslationJob(p.id, "prompt", p.lang, lang, p.instruction) for lang in languages for p in prompts]
    translations = translate(generator, jobs, params, desc="translating prompts", template=template)
    translated = [Prompt(id=t.id, lang=t.lang, instruction=t.output) for t in translations if t.output is not None]
    return [*prompts, *translated], translations


def cross_translate(
    generator: Generator,
    responses: Sequence[Response],
    source_lang: str,
    languages: Sequence[str],
    params: SamplingSettings,
    template: TranslationTemplate = "polyrise",
) -> list[Translation]:
    """Translate English answers into each language and each language's answers into English."""
    by_key = {(r.id, r.lang): r for r in responses}
    jobs: list[TranslationJob] = []
    for (pid, lang), r in by_key.items():
        if lang == source_lang:
            continue
        source = by_key.get((pid, source_lang))
        if source is None or lang not in languages:
            continue
        jobs.append(TranslationJob(pid, "response", source_lang, lang, source.output))
        jobs.append(TranslationJob(pid, "response", lang, source_lang, r.output))
    return translate(generator, jobs, params, desc="cross-translating answers", template=template)
