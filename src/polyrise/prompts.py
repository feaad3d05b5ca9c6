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


JUDGE_VERDICTS = ("Winner: A", "Winner: B", "Winner: tie")
"""The judge's final line is exactly one of these (parsed by `evaluation.judge.parse_verdict`)."""


def judge_prompt(instruction: str, answer_a: str, answer_b: str, lang: str) -> str:
    """Pairwise judging in the style of X-AlpacaEval (arXiv 2410.08964): which answer to an instruction
    in `lang` is better, where an answer not written in that language must lose."""
    name = get_language(lang).name
    return (
        f"You are an impartial expert judge of AI assistants. Below is an instruction written in {name} and "
        "two answers to it, Answer A and Answer B. Decide which answer is better: more helpful, more correct, "
        "more relevant, more complete and clearer in following the instruction.\n"
        "Rules:\n"
        f"1. Language first: an answer that is NOT written in {name}, the language of the instruction, must "
        f"lose, however good its content (unless the instruction itself asks for another language, as in a "
        f"translation request). If both answers are in {name}, or neither is, compare them on quality.\n"
        "2. Do not let the order of the answers or their length decide; a longer answer is not better for "
        "being longer.\n"
        "3. Say tie only when the two answers are of truly equal quality.\n\n"
        f"<instruction>\n{instruction}\n</instruction>\n\n"
        f"<answer_a>\n{answer_a}\n</answer_a>\n\n"
        f"<answer_b>\n{answer_b}\n</answer_b>\n\n"
        "Briefly explain your reasoning, then end with a final line that is exactly one of:\n"
        + "\n".join(JUDGE_VERDICTS)
    )
