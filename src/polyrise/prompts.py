"""Every prompt template polyrise sends to a model, in one place."""

from __future__ import annotations

from polyrise.languages import get_language

TRANSLATION_PREFIX = "<translated>\n"
"""The assistant turn is primed with this, so the model starts writing the translation at once."""


def translation_prompt(text: str, src_lang: str, tgt_lang: str) -> str:
    """The self-translation instruction of Language Imbalance Driven Rewarding (arXiv 2410.08964)."""
    src, tgt = get_language(src_lang).name, get_language(tgt_lang).name
    return (
        f"Translate the following {src} text into {tgt}. The text is wrapped in <sentence></sentence>. "
        f"Write only the {tgt} translation, wrapped in <translated></translated>.\n"
        f"<sentence>{text}</sentence>"
    )
