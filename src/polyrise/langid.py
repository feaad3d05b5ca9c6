"""Language identification with py3langid (bundled model, offline)."""

from __future__ import annotations

from functools import cache


@cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect(text: str) -> tuple[str, float]:
    """Most likely ISO 639-1 code of `text` and its probability."""
    lang, prob = _identifier().classify(text)
    return lang, float(prob)


def matches_language(text: str, lang: str, min_chars: int) -> bool | None:
    """Whether `text` is in `lang`; None when it is too short to tell (fewer than `min_chars` letters)."""
    if sum(ch.isalpha() for ch in text) < min_chars:
        return None
    return detect(text)[0] == lang
