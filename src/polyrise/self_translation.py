"""Self-translation: the model translates tagged text; failures are `None`, counted, never kept. A self-translated
prompt is checked before anything is generated for it (`prompt_drop_reason`), as the pair filters check answers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from polyrise.generation import ChatRequest, Generator
from polyrise.langid import LangIdSettings, matches_language
from polyrise.languages import LANGUAGES
from polyrise.records import DroppedPrompt, Prompt, Response, Translation
from polyrise.settings import PromptCheckSettings, SamplingSettings, TranslationTemplate
from polyrise.templates import TRANSLATION_PREFIX, translation_prompt

_OPEN = re.compile(r"<translated>", re.IGNORECASE)
_CLOSE = "</translated>"
_CLOSE_RE = re.compile(re.escape(_CLOSE), re.IGNORECASE)
_STRAY_TAGS = re.compile(r"</?(?:sentence|translated)>", re.IGNORECASE)
_MARKUP = re.compile(r"<[^<>\n]*>")
_PROTOCOL_WORDS = sorted(
    {"sentence", "translated", "translation", *LANGUAGES, *(lang.name for lang in LANGUAGES.values())},
    key=len,
    reverse=True,
)
_PROTOCOL_TAG = re.compile(r"</?\s*(?:" + "|".join(map(re.escape, _PROTOCOL_WORDS)) + r")\b", re.IGNORECASE)
"""The opening of a tag of the translation protocol (`<sentence>`, `<translated>`) or one a model makes up from it,
named by a language (`<french>`, `</German>`, `<English:`)."""

PROMPT_DROP_REASONS = (
    "translation_failure",
    "protocol_tags",
    "degenerate_repetition",
    "copy_of_source",
    "wrong_language",
    "length_ratio",
)
"""The checks of a self-translated prompt in the order they are applied; a prompt is counted under the first that
drops it."""


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


def _repeats(text: str, limit: int) -> bool:
    """Whether a phrase of up to 30 characters with a letter in it occurs `limit` times in a row."""
    pattern = rf"(\S(?:.{{0,28}}?\S)?)(?:\s*\1){{{limit - 1},}}"
    return any(any(ch.isalpha() for ch in m.group(1)) for m in re.finditer(pattern, text))


def _normalized(text: str) -> str:
    return " ".join(text.casefold().split())


def prompt_drop_reason(
    attempt: Translation, checks: PromptCheckSettings, langid: LangIdSettings, others: Sequence[str] = ()
) -> str | None:
    """The first check (`PROMPT_DROP_REASONS`) a prompt's self-translation fails, or None to keep it: extraction
    failed; a protocol tag left in that the source does not have; a phrase repeated `repeat_limit` times in a row
    that the source does not repeat; the source copied; another language by the pair filters' detector (`langid`,
    with `others` as candidates; a text it cannot tell passes); a length ratio out of bounds."""
    text, source = attempt.output, attempt.source
    if text is None:
        return "translation_failure"
    if _PROTOCOL_TAG.search(text) and not _PROTOCOL_TAG.search(source):
        return "protocol_tags"
    if _repeats(text, checks.repeat_limit) and not _repeats(source, checks.repeat_limit):
        return "degenerate_repetition"
    if attempt.lang != attempt.src_lang and _normalized(text) == _normalized(source):
        return "copy_of_source"
    if matches_language(text, attempt.lang, langid, others) is False:
        return "wrong_language"
    ratio = len(text) / max(len(source), 1)
    return None if checks.min_length_ratio <= ratio <= checks.max_length_ratio else "length_ratio"


def translate_prompts(
    generator: Generator,
    prompts: Sequence[Prompt],
    languages: Sequence[str],
    params: SamplingSettings,
    template: TranslationTemplate = "polyrise",
    *,
    given: Sequence[Prompt] = (),
    checks: PromptCheckSettings | None = None,
    langid: LangIdSettings | None = None,
) -> tuple[list[Prompt], list[Translation], list[DroppedPrompt]]:
    """Self-translate source prompts into every language where `given` has no translation of them; returns source +
    given + translated prompts, all attempts, and the translations dropped: failures always, and with `checks`
    (enabled) those `prompt_drop_reason` rejects (judged with `langid`, the run's settings)."""
    have = {(p.id, p.lang) for p in given}
    jobs = [
        TranslationJob(p.id, "prompt", p.lang, lang, p.instruction)
        for lang in languages
        for p in prompts
        if (p.id, lang) not in have
    ]
    translations = translate(generator, jobs, params, desc="translating prompts", template=template)
    others = sorted({*languages, *(p.lang for p in prompts)})
    translated, dropped = [], []
    for t in translations:
        reason = "translation_failure" if t.output is None else None
        if reason is None and checks is not None and checks.enabled:
            reason = prompt_drop_reason(t, checks, langid or LangIdSettings(), others)
        if reason is not None:
            dropped.append(DroppedPrompt(id=t.id, lang=t.lang, source=t.source, translation=t.output, reason=reason))
        elif t.output is not None:
            translated.append(Prompt(id=t.id, lang=t.lang, instruction=t.output))
    return [*prompts, *given, *translated], translations, dropped


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
