"""Every prompt template polyrise sends to a model, in one place."""

from __future__ import annotations

from collections.abc import Iterable

from polyrise.languages import get_language
from polyrise.settings import TranslationTemplate

TRANSLATION_PREFIX = "<translated>\n"
"""The assistant turn is primed with this, so the model starts writing the translation at once."""


def translation_prompt(text: str, src_lang: str, tgt_lang: str, template: TranslationTemplate = "polyrise") -> str:
    """The self-translation instruction: polyrise's own wording (after LIDR's protocol: tagged input, the answer
    primed with `TRANSLATION_PREFIX`), or with `lidr-reference` the released LIDR code's TRANS_INSTRUCTION
    (ZNLP/Language-Imbalance-Driven-Rewarding utils/trans_prompts.py:1-5, commit bd9764e), which names no source
    language."""
    src, tgt = get_language(src_lang).name, get_language(tgt_lang).name
    if template == "lidr-reference":
        return (
            f"Please translate the following sentences into {tgt}. The input sentences are wrapped by <sentence> "
            "and </sentence>:\n\n"
            f"<sentence>\n{text}\n</sentence>\n\n"
            "The translated result should be wrapped by <translated> and </translated>.\n"
        )
    return (
        f"Translate the following {src} text into {tgt}. The text is wrapped in <sentence></sentence>. "
        f"Write only the {tgt} translation, wrapped in <translated></translated>.\n"
        f"<sentence>{text}</sentence>"
    )


def answer_in_prompt(instruction: str, lang: str) -> str:
    """Implicit Cross-Lingual Rewarding's scoring instruction: the English `instruction` with the request to answer
    in `lang` before it (the released code's PREFIX; an answer in the source language is scored plainly)."""
    return (
        f"Please answer the following instruction using only {get_language(lang).name}, unless explicitly "
        f"instructed to respond in a different language.\n\n{instruction}"
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


MATH_ANSWER_PHRASES: dict[str, str] = {
    "bn": "উত্তর হল",
    "de": "Die Antwort lautet",
    "en": "The answer is",
    "es": "La respuesta es",
    "fr": "La réponse est",
    "ja": "答えは",
    "ru": "Ответ —",
    "sw": "Jibu ni",
    "te": "సమాధానం",
    "th": "คำตอบคือ",
    "zh": "答案是",
}
"""The phrase that introduces the final number of a math answer (MGSM's native chain-of-thought phrases)."""

MATH_INSTRUCTIONS: dict[str, str] = {
    "bn": 'নিচের গণিত সমস্যাটি সমাধান করো। ধাপে ধাপে চিন্তা করো, তারপর শেষে লেখো "উত্তর হল N।", যেখানে N হল চূড়ান্ত সংখ্যা।',
    "de": (
        "Löse die folgende Mathematikaufgabe. Denke Schritt für Schritt nach und beende deine Antwort mit "
        '"Die Antwort lautet N.", wobei N die endgültige Zahl ist.'
    ),
    "en": (
        "Solve the following math problem. Think step by step, then end your reply with "
        '"The answer is N.", where N is the final number.'
    ),
    "es": (
        "Resuelve el siguiente problema de matemáticas. Razona paso a paso y termina tu respuesta con "
        '"La respuesta es N.", donde N es el número final.'
    ),
    "fr": (
        "Résous le problème de mathématiques suivant. Raisonne étape par étape, puis termine ta réponse par "
        '"La réponse est N.", où N est le nombre final.'
    ),
    "ja": (
        "次の算数の問題を解いてください。段階的に考え、最後に「答えはNです。」と書いてください。Nは最終的な数値です。"
    ),
    "ru": (
        "Реши следующую математическую задачу. Рассуждай шаг за шагом и закончи ответ фразой "
        '"Ответ — N.", где N — итоговое число.'
    ),
    "sw": (
        "Tatua tatizo lifuatalo la hisabati. Fikiri hatua kwa hatua, kisha malizia jibu lako kwa "
        '"Jibu ni N.", ambapo N ni namba ya mwisho.'
    ),
    "te": 'కింది గణిత సమస్యను పరిష్కరించండి. దశలవారీగా ఆలోచించి, చివరగా "సమాధానం N." అని రాయండి, ఇక్కడ N తుది సంఖ్య.',
    "th": 'จงแก้โจทย์คณิตศาสตร์ต่อไปนี้ ให้คิดทีละขั้นตอน แล้วจบคำตอบด้วย "คำตอบคือ N" โดยที่ N คือตัวเลขคำตอบสุดท้าย',
    "zh": "请解答下面的数学题。请逐步推理，并在最后写出“答案是 N。”，其中 N 是最终的数字。",  # noqa: RUF001
}
"""Zero-shot math instruction per language, written in that language; other languages get the English one."""


def math_answer_phrase(lang: str) -> str:
    """The answer phrase of `lang` (English for languages without one)."""
    return MATH_ANSWER_PHRASES.get(lang, MATH_ANSWER_PHRASES["en"])


def math_prompt(question: str, lang: str) -> str:
    """The user turn of a math problem: the language's instruction, a blank line, the question."""
    return f"{MATH_INSTRUCTIONS.get(lang, MATH_INSTRUCTIONS['en'])}\n\n{question}"


def math_demo_answer(answer: str, lang: str, solution: str | None = None) -> str:
    """A few-shot demonstration's assistant turn: the worked solution (if any), then phrase + number."""
    phrase = math_answer_phrase(lang)
    end = {"ja": "です。", "zh": "。", "bn": "।", "th": ""}.get(lang, ".")
    sep = "" if lang == "ja" else " "
    final = f"{phrase}{sep}{answer}{end}"
    return f"{solution.strip()}\n{final}" if solution and solution.strip() else final


def classify_prompt(text: str, demos: Iterable[tuple[str, str]]) -> str:
    """Few-shot classification as plain text (no chat template): each (text, label) demonstration as
    "text\\nAnswer: label\\n\\n", then the text with "Answer:" waiting for its label (the continuation " " + label)."""
    shots = "".join(f"{demo}\nAnswer: {label}\n\n" for demo, label in demos)
    return f"{shots}{text}\nAnswer:"
