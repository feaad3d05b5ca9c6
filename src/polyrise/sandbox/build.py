"""Building a sandbox: the tiny Llama trained from scratch on the imbalanced mix, and every file a build writes.

`build_sandbox` (CLI: `polyrise sandbox build`) builds in `.<out>.building` beside `out` and swaps it into place when
done (a killed rebuild leaves neither a mix of two builds nor an old `sandbox.json`); it writes:

- `model/`: the tiny Llama with its word-level tokenizer and chat template (written beside it, then renamed into
  place); any polyrise command takes it as a model spec;
- `aligned/`: `model/` tuned by DPO on English preferences from gold (a problem's worked answer over the same
  answer with a wrong result): the English-aligned policy of Implicit Cross-Lingual Rewarding, `model/` its
  reference;
- `prompts/train.jsonl`: English task prompts (`id`, `instruction`) for `polyrise run`;
- `eval/{lang}.jsonl`: the exact scorer's data, MGSM JSONL (`query`, `response`), aligned across languages by row;
- `translation/{lang}.jsonl`: held-out parallel sentences (`id`, `instruction`) for `--task translation`;
- `sandbox.json`: seed, sizes, data mix, languages, the measured M0 metrics and the library versions; written last.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from polyrise.io import file_hash, write_json, write_jsonl, writing_into
from polyrise.records import PreferencePair
from polyrise.sandbox.data import (
    DataMix,
    Sizes,
    draw_splits,
    eval_rows,
    prompt_rows,
    tokenizer_corpus,
    training_examples,
    translation_rows,
)
from polyrise.sandbox.measure import measure_alignment, measure_m0
from polyrise.sandbox.tokenizer import build_tokenizer, encode_example, instruction_phrases
from polyrise.sandbox.world import CLONES, SOURCE_LANG, Problem, make_clones
from polyrise.versions import library_versions

SANDBOX_JSON = "sandbox.json"


@dataclass(frozen=True)
class ModelSize:
    """The Llama's shape (`LlamaConfig`: hidden size, layers, attention heads, MLP size; embeddings tied)."""

    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 384


@dataclass(frozen=True)
class PretrainSettings:
    """How M0 is trained from scratch with the HF Trainer (AdamW, cosine schedule with `warmup` as a share of the
    steps); not the run config's `training` settings, which fine-tune an existing model."""

    epochs: float = 3.0
    learning_rate: float = 3e-3
    batch_size: int = 8
    warmup: float = 0.05
    weight_decay: float = 0.01


ALIGN_PAIRS = 200
"""The English alignment's default strength: the pairs (one epoch) every documented sandbox number was built with."""


@dataclass(frozen=True)
class AlignSettings:
    """The English alignment of `aligned/`: DPO + NLL (full fine-tuning, one epoch) on `pairs` English training
    problems. `pairs` is the alignment's strength (`polyrise sandbox build --align-pairs`): more pairs, more steps,
    capped by the mix's English task problems (`DataMix.english_task`)."""

    pairs: int = ALIGN_PAIRS
    learning_rate: float = 1e-4
    beta: float = 0.1
    nll_weight: float = 1.0
    batch_size: int = 16


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
    """The `PretrainSettings` of the build."""
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
    aligned: dict[str, Any] = field(default_factory=dict)
    """The English alignment of `aligned/`: its `AlignSettings`, the pairs it trained on (`examples`), the
    training's `train_loss` and, measured, `pair_accuracy` (`measure_alignment`): how often the implicit reward
    log aligned - log model (`implicit_reward`) and M0's plain log-likelihood (`m0_likelihood`) prefer the gold
    answer on the alignment's own pairs (`train`) and on pairs built the same way from the held-out eval
    problems (`held_out`)."""
    seconds: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)
    """The library versions of the build (`library_versions`)."""

    @property
    def model_dir(self) -> Path:
        return Path(self.out) / "model"

    @property
    def aligned_dir(self) -> Path:
        return Path(self.out) / "aligned"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def save(self) -> Path:
        """Write `sandbox.json` into the build dir, atomically; returns its path."""
        path = Path(self.out) / SANDBOX_JSON
        write_json(path, self.to_json())
        return path


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
    train: PretrainSettings | None = None,
    sizes: Sizes | None = None,
    align: AlignSettings | None = None,
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

    out = Path(out)
    (out / SANDBOX_JSON).unlink(missing_ok=True)  # whatever happens next, `out` is no complete sandbox any more
    staging, old = (out.with_name(f".{out.name}.{part}") for part in ("building", "old"))
    for leftover in (staging, old):  # a killed build's
        shutil.rmtree(leftover, ignore_errors=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with writing_into(staging, "the sandbox"):
            align = align or AlignSettings()
            info = _build(staging, seed, clones, mix, model_size, train, sizes, align, evaluate, console, progress)
    finally:
        torch.set_num_threads(before)
    if out.exists():  # swap: `out` is the old build or the new one, never a mix of both
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    info.out = str(out)
    info.save()  # last: the marker of a complete build
    return info


def _build(
    out: Path,
    seed: int,
    clones: Sequence[str],
    mix: DataMix | None,
    model_size: ModelSize | None,
    train: PretrainSettings | None,
    sizes: Sizes | None,
    align: AlignSettings,
    evaluate: bool,
    console: Any,
    progress: bool,
) -> SandboxInfo:
    mix, model_size, train, sizes = (
        mix or DataMix(),
        model_size or ModelSize(),
        train or PretrainSettings(),
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

    rng = random.Random(seed)
    splits = draw_splits(rng, sizes, mix, len(world))
    examples = training_examples(splits.train, mix, world, rng)
    for lang in langs:
        write_jsonl(out / "eval" / f"{lang}.jsonl", eval_rows(splits.eval, lang, world))
        write_jsonl(out / "translation" / f"{lang}.jsonl", translation_rows(splits.translation_test, lang, world))
    write_jsonl(out / "prompts" / "train.jsonl", prompt_rows(splits.prompts))

    # Tokenizer: every text the sandbox writes, and every instruction the pipeline sends about these languages.
    tokenizer = build_tokenizer(tokenizer_corpus(examples, splits, langs, world), instruction_phrases(langs))
    info.vocab_size = len(tokenizer)
    encoded = [encode_example(tokenizer, e.messages) for e in examples]

    model = _new_model(tokenizer, model_size, seed)
    info.parameters = sum(p.numel() for p in model.parameters())
    n_tokens = sum(len(e["input_ids"]) for e in encoded)
    _say(
        console,
        f"sandbox: {len(encoded)} training chats ({n_tokens} tokens), vocabulary {len(tokenizer)}, "
        f"Llama with {info.parameters / 1e6:.2f}M parameters",
    )
    t_train = time.perf_counter()
    info.train_loss = pretrain(model, encoded, tokenizer.pad_token_id, train, seed, progress)
    info.seconds["train"] = round(time.perf_counter() - t_train, 1)

    _save_model(model, tokenizer, info.model_dir)
    info.weights_sha256 = file_hash(info.model_dir / "model.safetensors")

    _say(console, f"aligning M0 on {align.pairs} English preference pairs (DPO + NLL): {info.aligned_dir}")
    t_align = time.perf_counter()
    english = splits.train[: min(align.pairs, mix.english_task)]  # the English task problems of the mix
    pairs = {
        "train": english_preferences(english, random.Random(seed)),
        "held_out": english_preferences(splits.eval, random.Random(seed)),  # never trained on by M0 or the alignment
    }
    loss = align_english(info.model_dir, info.aligned_dir, pairs["train"], align, seed)
    info.aligned = asdict(align) | {"examples": len(english), "train_loss": loss}
    info.seconds["align"] = round(time.perf_counter() - t_align, 1)

    if evaluate:
        _say(console, "measuring the alignment: implicit reward and M0's likelihood on train and held-out pairs")
        t_pairs = time.perf_counter()
        info.aligned["pair_accuracy"] = measure_alignment(
            info.model_dir, info.aligned_dir, pairs, seed, model=model.eval(), tokenizer=tokenizer
        )
        info.seconds["align_measure"] = round(time.perf_counter() - t_pairs, 1)
        _say(console, "measuring M0: task accuracy per language, self-translation per direction")
        t_eval = time.perf_counter()
        for key, value in measure_m0(out, info.languages, model=model.eval(), tokenizer=tokenizer).items():
            setattr(info, key, value)
        info.seconds["evaluate"] = round(time.perf_counter() - t_eval, 1)
    info.seconds["total"] = round(time.perf_counter() - t_start, 1)
    return info


def english_preferences(problems: Sequence[Problem], rng: random.Random) -> list[PreferencePair]:
    """Per problem: the English question, its worked answer (chosen) over the same answer with a result off by 1 or
    2 (rejected, never below 0)."""
    pairs = []
    for i, p in enumerate(problems):
        wrong = rng.choice([m for m in (p.n - 2, p.n - 1, p.n + 1, p.n + 2) if m >= 0])
        pairs.append(
            PreferencePair(
                id=f"align-{i}",
                lang=SOURCE_LANG,
                via=SOURCE_LANG,
                prompt=p.question,
                chosen=p.answer,
                rejected=p.worked(wrong),
            )
        )
    return pairs


def align_english(base: Path, out: Path, pairs: Sequence[PreferencePair], settings: AlignSettings, seed: int) -> float:
    """DPO + NLL of `base` on English preference `pairs` into `out` (written atomically); the training loss."""
    from polyrise.models import resolve_model
    from polyrise.training.dpo import train_dpo
    from polyrise.training.settings import DPOSettings

    dpo = DPOSettings(
        method="full",
        learning_rate=settings.learning_rate,
        beta=settings.beta,
        nll_weight=settings.nll_weight,
        batch_size=settings.batch_size,
        max_length=192,
    )
    return float(train_dpo(resolve_model(str(base)), pairs, out, dpo, seed=seed)["train_loss"])


def _new_model(tokenizer: Any, size: ModelSize, seed: int) -> Any:
    """A freshly initialised Llama of `size` for `tokenizer` (the initial weights follow `seed`)."""
    from transformers import LlamaConfig, LlamaForCausalLM, set_seed

    set_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def pretrain(
    model: Any, encoded: list[dict[str, list[int]]], pad_id: int, settings: PretrainSettings, seed: int, progress: bool
) -> float:
    """Train `model` from scratch on the encoded chats with the HF Trainer on CPU; returns the mean training loss."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from polyrise.training.runs import step_callback

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=settings.batch_size,
            num_train_epochs=settings.epochs,
            learning_rate=settings.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=settings.warmup,
            weight_decay=settings.weight_decay,
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
            disable_tqdm=True,  # the printer is replaced by polyrise's step lines (`progress`) or dropped
            log_level="warning",
        )
        trainer = Trainer(model=model, args=args, train_dataset=encoded, data_collator=_Collator(pad_id))
        trainer.remove_callback(PrinterCallback)
        if progress:
            trainer.add_callback(step_callback())
        return float(trainer.train().training_loss)


def _save_model(model: Any, tokenizer: Any, model_dir: Path) -> None:
    """Save the model and tokenizer (EOS `<|end|>` in the generation config too) into a temporary dir beside
    `model_dir`, then rename it into place, so `model_dir` is either the previous build's or complete."""
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    tmp = model_dir.parent / f".{model_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    os.replace(tmp, model_dir)
