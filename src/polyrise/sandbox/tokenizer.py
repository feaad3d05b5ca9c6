"""The sandbox model's word-level tokenizer and chat template (`<|role|>\\ncontent<|end|>\\n`)."""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from polyrise.templates import math_prompt, translation_prompt

UNK, PAD, END = "<|unk|>", "<|pad|>", "<|end|>"
ROLES = ("<|system|>", "<|user|>", "<|assistant|>")
TAGS = ("<sentence>", "</sentence>", "<translated>", "</translated>")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
"""`<|role|>\\ncontent<|end|>\\n` per message; `<|end|>` is the EOS that ends generation."""
PIECES = r" ?\p{L}+| ?[^\s\p{L}\p{N}]| ?\p{N}|\s"
"""Pre-tokenization: a word, punctuation mark or single digit, each with at most one leading space, or one whitespace
character ("has 17" → "has", " 1", "7"). Decoding concatenates the pieces, so decode(encode(text)) == text for every
text without unknown words."""


def instruction_phrases(langs: Sequence[str]) -> list[str]:
    """The fixed instruction text before the variable part of every prompt polyrise sends about `langs`: the
    translation instruction of each direction (up to `<sentence>`) and the math instruction (up to the question)."""
    mark = "\x00"
    heads = [translation_prompt(mark, s, t).split("<sentence>" + mark)[0] for s in langs for t in langs if s != t]
    heads += [math_prompt(mark, lang).split(mark)[0] for lang in langs]
    return list(dict.fromkeys(heads))


def build_tokenizer(texts: Sequence[str], phrases: Sequence[str] = ()) -> Any:
    """A word-level `PreTrainedTokenizerFast` whose vocabulary covers `texts`, every word with and without a
    leading space, digits, ASCII punctuation, the translation tags (plain tokens) and the chat tokens (special).

    Each of `phrases` (fixed instructions, see `instruction_phrases`) is also one token, so a training chat spends
    its compute on the text that varies; their words are in the vocabulary too, so edited instructions still encode.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Split(Regex(PIECES), behavior="isolated")
    pieces: set[str] = {" ", "\n"}
    for ch in string.punctuation + string.digits:
        pieces |= {ch, " " + ch}
    for text in [*texts, *phrases]:
        for tag in TAGS:
            text = text.replace(tag, " ")
        for piece, _ in pre.pre_tokenize_str(text):
            if piece.strip():
                word = piece.lstrip(" ")
                pieces |= {word, " " + word}
    specials = [UNK, PAD, END, *ROLES]
    phrases = sorted(set(phrases) - set(pieces))
    vocab = {tok: i for i, tok in enumerate([*specials, *TAGS, *phrases, *sorted(pieces)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in [*TAGS, *phrases]])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        pad_token=PAD,
        eos_token=END,
        additional_special_tokens=list(ROLES),
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )


def encode_example(tokenizer: Any, messages: Sequence[dict[str, str]]) -> dict[str, list[int]]:
    """Token ids of a chat; the loss is on the assistant turn (its text and the closing `<|end|>`) only."""
    prompt = tokenizer.apply_chat_template(list(messages[:-1]), tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
    answer_ids.append(tokenizer.eos_token_id)
    return {"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids}
