"""The cloned-language sandbox: a small world with a known language imbalance, built and measured on CPU in minutes.

`build_sandbox` (CLI: `polyrise sandbox build`) writes

- `model/`: a tiny Llama trained from scratch with the HF Trainer, with a word-level tokenizer and a chat template;
  any polyrise command takes it as a model spec;
- `prompts/train.jsonl`: English task prompts (`id`, `instruction`) for `polyrise run`;
- `eval/{lang}.jsonl`: the exact scorer's data, MGSM JSONL (`query`, `response`), aligned across languages by row;
- `translation/{lang}.jsonl`: held-out parallel sentences (`id`, `instruction`) for `--task translation`;
- `sandbox.json`: seed, sizes, data mix, languages and the measured M0 metrics.

The task: templated arithmetic word problems ("Tom has 3 apples. Tom buys 4 more apples. How many apples does Tom
have now?" → "3 + 4 = 7. Tom has 7 apples."), scored by the final integer of the answer. The languages: English
and cloned languages after Schäfer et al. 2024 ("The Role of Language Imbalance in Cross-lingual Generalisation"):
a clone keeps English grammar but writes every word (names too) as its own pseudo-word, so a clone shares nothing
with English on the surface but digits and punctuation. Clone `qab` also reverses the word order of every sentence,
so translating it is not a token-by-token map.

The model is trained on an imbalanced mix (`DataMix`): many English task examples, translation examples in both
directions for every clone written in polyrise's own self-translation protocol (`prompts.translation_prompt`,
answer `<translated>\\n…</translated>`), and few task examples in the clones.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from polyrise.errors import PolyriseError
from polyrise.templates import TRANSLATION_PREFIX, math_prompt, translation_prompt

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

    def _fill(self, text: str) -> str:
        return text.format(
            a=self.a, b=self.b, obj=self.obj, x=self.x, y=self.y, n=self.n, op=TEMPLATES[self.template].op
        )

    @property
    def question(self) -> str:
        return self._fill(TEMPLATES[self.template].question)

    @property
    def answer(self) -> str:
        """The worked answer: the equation, then a sentence ending in the result ("3 + 4 = 7. Tom has 7 apples.")."""
        return self._fill("{x} {op} {y} = {n}. " + TEMPLATES[self.template].answer)


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


# ---------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------
# Training data
# ---------------------------------------------------------------------------------------------------


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
    """Share of task examples whose question is wrapped in polyrise's MGSM instruction (`prompts.math_prompt`), the
    form the exact scorer asks in; the rest are bare questions, the form the pipeline's prompts take."""


@dataclass(frozen=True)
class ModelSize:
    """The Llama's shape (`LlamaConfig`: hidden size, layers, attention heads, MLP size; embeddings tied)."""

    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 384


@dataclass(frozen=True)
class TrainSettings:
    """The HF Trainer's settings for M0 (AdamW, cosine schedule with `warmup` as a share of the steps)."""

    epochs: float = 3.0
    learning_rate: float = 3e-3
    batch_size: int = 8
    warmup: float = 0.05
    weight_decay: float = 0.01


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


def encode_example(tokenizer: Any, messages: Sequence[dict[str, str]]) -> dict[str, list[int]]:
    """Token ids of a chat; the loss is on the assistant turn (its text and the closing `<|end|>`) only."""
    prompt = tokenizer.apply_chat_template(list(messages[:-1]), tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
    answer_ids.append(tokenizer.eos_token_id)
    return {"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids}


class _Collator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# ---------------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------------


@dataclass
class SandboxInfo:
    """What `build_sandbox` made and measured (also written to `sandbox.json`)."""

    out: str
    seed: int
    languages: list[str]
    clones: dict[str, str]
    mix: dict[str, Any]
    model_size: dict[str, Any]
    train: dict[str, Any]
    sizes: dict[str, int]
    parameters: int = 0
    vocab_size: int = 0
    weights_sha256: str = ""
    train_loss: float = float("nan")
    accuracy: dict[str, float] = field(default_factory=dict)
    """M0's exact-match task accuracy per language (the MGSM scorer on `eval/{lang}.jsonl`, greedy)."""
    gap: dict[str, float] = field(default_factory=dict)
    """English accuracy minus each clone's."""
    translation_exact: dict[str, float] = field(default_factory=dict)
    """M0's exact-match self-translation accuracy per direction (`en-qaa`, `qaa-en`, ...) on the texts of
    `translation/`: held-out questions (never in training) and their answers (whose sentences training may hold)."""
    translation_exact_questions: dict[str, float] = field(default_factory=dict)
    """The same on the held-out questions alone."""
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return Path(self.out) / "model"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    from polyrise.io import write_jsonl

    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, rows)


def _say(console: Any, text: str) -> None:
    if console is not None:
        console.print(text)


def build_sandbox(
    out: Path,
    seed: int = 0,
    *,
    clones: Sequence[str] = tuple(CLONES),
    mix: DataMix | None = None,
    model_size: ModelSize | None = None,
    train: TrainSettings | None = None,
    sizes: Sizes | None = None,
    evaluate: bool = True,
    threads: int = 1,
    console: Any = None,
    progress: bool = True,
) -> SandboxInfo:
    """Build the sandbox into `out` (see the module docstring) and measure M0.

    The same seed (and `threads`, the torch CPU threads used meanwhile) gives the same weights. One thread is the
    default: on a busy machine a second thread waits on the first more than it helps such small matrices, and the
    thread count changes the floating-point summation order. `evaluate=False` skips the M0 measurements.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _build(out, seed, clones, mix, model_size, train, sizes, evaluate, console, progress)
    finally:
        torch.set_num_threads(before)


def _build(
    out: Path,
    seed: int,
    clones: Sequence[str],
    mix: DataMix | None,
    model_size: ModelSize | None,
    train: TrainSettings | None,
    sizes: Sizes | None,
    evaluate: bool,
    console: Any,
    progress: bool,
) -> SandboxInfo:
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments, set_seed

    mix, model_size, train, sizes = (
        mix or DataMix(),
        model_size or ModelSize(),
        train or TrainSettings(),
        sizes or Sizes(),
    )
    out = Path(out)
    t_start = time.perf_counter()
    world = make_clones(clones)
    langs = [SOURCE_LANG, *world]
    info = SandboxInfo(
        out=str(out),
        seed=seed,
        languages=langs,
        clones={code: world[code].order for code in world},
        mix=asdict(mix),
        model_size=asdict(model_size),
        train=asdict(train),
        sizes=asdict(sizes),
    )

    # Problems: held-out splits first, then the training problems; no question is in two splits.
    rng = random.Random(seed)
    seen: set[str] = set()
    eval_problems = sample_problems(rng, sizes.eval, seen)
    test_problems = sample_problems(rng, sizes.translation_test, seen)
    prompt_problems = sample_problems(rng, sizes.prompts, seen)
    train_problems = sample_problems(rng, n_training_problems(mix, len(world)), seen, unique=False)
    examples = training_examples(train_problems, mix, world, rng)

    for lang in langs:
        _write_jsonl(
            out / "eval" / f"{lang}.jsonl",
            [{"query": render(p.question, lang, world), "response": str(p.n)} for p in eval_problems],
        )
        _write_jsonl(out / "translation" / f"{lang}.jsonl", _translation_rows(test_problems, lang, world))
    _write_jsonl(
        out / "prompts" / "train.jsonl",
        [{"id": f"sandbox-{i}", "instruction": p.question} for i, p in enumerate(prompt_problems)],
    )

    # Tokenizer: every text the sandbox writes, and every instruction the pipeline sends about these languages.
    corpus = [m["content"] for e in examples for m in e.messages]
    for p in (*eval_problems, *test_problems, *prompt_problems):
        corpus += [render(text, lang, world) for lang in langs for text in (p.question, p.answer)]
    tokenizer = build_tokenizer(corpus, instruction_phrases(langs))
    info.vocab_size = len(tokenizer)
    encoded = [encode_example(tokenizer, e.messages) for e in examples]

    set_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_size.hidden,
        intermediate_size=model_size.intermediate,
        num_hidden_layers=model_size.layers,
        num_attention_heads=model_size.heads,
        num_key_value_heads=model_size.heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    info.parameters = sum(p.numel() for p in model.parameters())
    n_tokens = sum(len(e["input_ids"]) for e in encoded)
    _say(
        console,
        f"sandbox: {len(encoded)} training chats ({n_tokens} tokens), vocabulary {len(tokenizer)}, "
        f"Llama with {info.parameters / 1e6:.2f}M parameters",
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=train.batch_size,
            num_train_epochs=train.epochs,
            learning_rate=train.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=train.warmup,
            weight_decay=train.weight_decay,
            adam_beta2=0.98,
            max_grad_norm=1.0,
            train_sampling_strategy="group_by_length",
            logging_steps=50,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=seed,
            data_seed=seed,
            dataloader_num_workers=0,
            disable_tqdm=not progress,
            log_level="warning",
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=encoded, data_collator=_Collator(tokenizer.pad_token_id)
        )
        t_train = time.perf_counter()
        result = trainer.train()
        info.seconds["train"] = round(time.perf_counter() - t_train, 1)
    info.train_loss = float(result.training_loss)

    model_dir = out / "model"
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    info.weights_sha256 = _sha256(model_dir / "model.safetensors")

    if evaluate:
        _say(console, "measuring M0: task accuracy per language, self-translation per direction")
        t_eval = time.perf_counter()
        measure_m0(info, model=model.eval(), tokenizer=tokenizer)
        info.seconds["evaluate"] = round(time.perf_counter() - t_eval, 1)
    info.seconds["total"] = round(time.perf_counter() - t_start, 1)
    (out / "sandbox.json").write_text(json.dumps(info.to_json(), indent=2) + "\n", encoding="utf-8")
    return info


def _translation_rows(problems: Sequence[Problem], lang: str, world: dict[str, Clone]) -> list[dict[str, str]]:
    """Held-out texts for translation tests: each problem's question and its answer, aligned by `id`."""
    rows = []
    for i, p in enumerate(problems):
        rows.append({"id": f"q{i}", "instruction": render(p.question, lang, world)})
        rows.append({"id": f"a{i}", "instruction": render(p.answer, lang, world)})
    return rows


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def measure_m0(info: SandboxInfo, *, model: Any = None, tokenizer: Any = None) -> SandboxInfo:
    """Fill `info` with the model's task accuracy per language (MGSM scorer on `eval/{lang}.jsonl`) and the
    exact-match self-translation accuracy per direction (`polyrise.self_translation.translate` on `translation/`)."""
    from polyrise.config import SamplingSettings
    from polyrise.evaluation.math import evaluate_math, load_math
    from polyrise.generation import Generator
    from polyrise.generation.cache import GenerationCache
    from polyrise.generation.hf import HFEngine
    from polyrise.io import iter_jsonl
    from polyrise.models import resolve_model
    from polyrise.self_translation import TranslationJob, translate

    out = Path(info.out)
    langs = info.languages
    resolved = resolve_model(str(out / "model"))
    engine = HFEngine(resolved, batch_size=64, model=model, tokenizer=tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        generator = Generator(engine, GenerationCache(Path(tmp) / "generations.sqlite"))
        problems = load_math(str(out / "eval" / "{lang}.jsonl"), langs)
        _, scores = evaluate_math(generator, problems, SamplingSettings(max_new_tokens=48))
        info.accuracy = {lang: scores[lang]["accuracy"] for lang in langs}
        info.gap = {lang: info.accuracy[SOURCE_LANG] - info.accuracy[lang] for lang in langs if lang != SOURCE_LANG}

        texts = {
            lang: {row["id"]: row["instruction"] for _, row in iter_jsonl(out / "translation" / f"{lang}.jsonl")}
            for lang in langs
        }
        jobs, refs = [], []
        for code in langs[1:]:
            for src, tgt in ((SOURCE_LANG, code), (code, SOURCE_LANG)):
                for id_, text in texts[src].items():
                    jobs.append(TranslationJob(id_, "prompt", src, tgt, text))
                    refs.append(texts[tgt][id_])
        results = translate(generator, jobs, SamplingSettings(max_new_tokens=96), desc="self-translation")
        hits: dict[str, list[bool]] = {}
        questions: dict[str, list[bool]] = {}
        for t, ref in zip(results, refs, strict=True):
            direction = f"{t.src_lang}-{t.lang}"
            hits.setdefault(direction, []).append(t.output == ref)
            if t.id.startswith("q"):
                questions.setdefault(direction, []).append(t.output == ref)
        info.translation_exact = {k: sum(v) / len(v) for k, v in hits.items()}
        info.translation_exact_questions = {k: sum(v) / len(v) for k, v in questions.items()}
    return info


def summary_table(info: SandboxInfo) -> tuple[list[str], list[list[str]]]:
    """M0's numbers as table columns and rows, one row per language: task accuracy, gap to English, and exact-match
    self-translation into and out of the language (all held-out texts, and the held-out questions alone)."""

    def cell(table: dict[str, float], key: str) -> str:
        return f"{table[key]:.3f}" if key in table else "-"

    rows = []
    for lang in info.languages:
        into, out = f"{SOURCE_LANG}-{lang}", f"{lang}-{SOURCE_LANG}"
        rows.append(
            [
                lang,
                cell(info.accuracy, lang),
                f"{info.gap[lang]:+.3f}" if lang in info.gap else "-",
                cell(info.translation_exact, into),
                cell(info.translation_exact, out),
                cell(info.translation_exact_questions, into),
                cell(info.translation_exact_questions, out),
            ]
        )
    return ["lang", "accuracy", "gap", "en→lang", "lang→en", "en→lang q", "lang→en q"], rows
