"""Logit lens: decode every layer's residual stream with the final norm + LM head, and measure how much of the
next-token probability sits on English tokens versus the prompt language's tokens (does the model "think" in
English in its middle layers, and does alignment change that?).

Also the pieces `similarity` shares: `layer_states` (one batched pass that keeps every layer) and `per_model` (load,
analyse and free one model at a time).
"""

from __future__ import annotations

import gc
import math
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch

from polyrise.analysis.writing import pyplot, save_figure, write_markdown
from polyrise.console import progress as progress_bar
from polyrise.errors import PolyriseError
from polyrise.generation.batching import left_pad
from polyrise.io import write_json
from polyrise.languages import get_language
from polyrise.models import load_model, load_tokenizer, resolve_model
from polyrise.records import Prompt

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

T = TypeVar("T")

METRICS = ("en_mass", "lang_mass", "en_top1", "lang_top1")
"""Per layer: mean probability on English / prompt-language tokens, share of prompts whose top token is one."""

LensResults = dict[str, dict[str, dict[str, Any]]]
"""model label → prompt language → {"n": prompts, metric: [value per layer (0 = embeddings)]}."""

_SCRIPT_OF_NAME = {
    "LATIN": "Latn",
    "CYRILLIC": "Cyrl",
    "GREEK": "Grek",
    "ARABIC": "Arab",
    "HEBREW": "Hebr",
    "DEVANAGARI": "Deva",
    "BENGALI": "Beng",
    "TAMIL": "Taml",
    "TELUGU": "Telu",
    "THAI": "Thai",
    "HANGUL": "Kore",
    "HIRAGANA": "Jpan",
    "KATAKANA": "Jpan",
    "CJK": "Hani",
}
"""First word of a letter's Unicode name → its script, as `languages.py` spells it ("Hani": Han characters)."""
_HAN_SCRIPTS = ("Hans", "Jpan")
"""A token of Han characters alone is Chinese when zh is asked for, else Japanese."""
_LABELS: dict[tuple[tuple[str, ...], tuple[str, ...]], torch.Tensor] = {}


def _script(text: str) -> str | None:
    """The script of a token's letters; None without letters or for mixed scripts (kana + Han is Japanese)."""
    scripts = {_SCRIPT_OF_NAME.get(unicodedata.name(ch, "").split(" ")[0]) for ch in text if ch.isalpha()}
    if scripts == {"Jpan", "Hani"}:
        return "Jpan"
    return scripts.pop() if len(scripts) == 1 else None


@cache
def _identifier() -> LanguageIdentifier:
    """A py3langid identifier of our own: `set_languages` restricts it, so it must not be `langid.py`'s."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def token_languages(tokenizer: Any, langs: Sequence[str]) -> torch.Tensor:
    """Label every vocabulary id with the index in `langs` of its language, or -1 for none: a long tensor.

    The script of the token's letters decides first (`languages.py` scripts; Han alone → zh, else ja). Where
    several asked-for languages share the script (Latin above all), py3langid restricted to them decides on the
    lower-cased token as a word end (" word " for a word start: leading space or capital; "piece " otherwise;
    this context lifts its accuracy on single words a lot). A token py3langid finds no evidence for (every
    candidate equally likely: "the", "he", "er", ...; its model has no n-gram of "the") is -1 rather than an
    arbitrary pick, as are Latin tokens of fewer than 2 letters, special tokens and tokens without letters.
    Cached per vocabulary and language list (a few seconds for a 49k vocabulary).
    """
    langs = tuple(langs)
    pieces = tuple(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    if (langs, pieces) in _LABELS:
        return _LABELS[langs, pieces]
    index = {code: k for k, code in enumerate(langs)}
    scripts = {code: get_language(code).script for code in langs}
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    labels = torch.full((len(pieces),), -1, dtype=torch.long)
    undecided: dict[tuple[str, ...], list[tuple[int, str]]] = {}
    for i, raw in enumerate(tokenizer.batch_decode([[i] for i in range(len(pieces))])):
        raw = raw.replace("\u2581", " ")  # SentencePiece's space marker, should decoding leave it
        text = raw.strip()
        script = None if i in special else _script(text)
        if script is None or (script == "Latn" and sum(ch.isalpha() for ch in text) < 2):
            continue
        wanted = _HAN_SCRIPTS if script == "Hani" else (script,)
        candidates = next((c for s in wanted if (c := tuple(code for code in langs if scripts[code] == s))), ())
        if len(candidates) == 1:
            labels[i] = index[candidates[0]]
        elif candidates:
            start = " " if raw[:1].isspace() or text[:1].isupper() else ""
            undecided.setdefault(candidates, []).append((i, f"{start}{text.lower()} "))
    identifier = _identifier()
    for candidates, items in undecided.items():
        identifier.set_languages(candidates)
        for i, word in items:
            lang, prob = identifier.classify(word)
            if prob > 1 / len(candidates) + 1e-6:
                labels[i] = index[lang]
    _LABELS[langs, pieces] = labels
    return labels


def _lens_parts(model: Any) -> tuple[Any, torch.nn.Module, torch.nn.Module]:
    """(base transformer, its final norm, the LM head) of a causal LM, found by the usual HF names."""
    base, head = model.base_model, model.get_output_embeddings()
    norm = next(
        (
            module
            for name in ("norm", "final_layernorm", "ln_f", "final_layer_norm")
            if isinstance(module := getattr(base, name, None), torch.nn.Module)
        ),
        None,
    )
    if base is model or head is None or norm is None:
        raise PolyriseError(
            f"{type(model).__name__}: cannot find the base model's final norm (norm, final_layernorm, ln_f) "
            "and the LM head that the per-layer analyses need"
        )
    return base, norm, head


def layer_states(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    pool: Literal["last", "mean"],
    chat: bool,
    batch_size: int = 8,
    description: str = "running model",
) -> torch.Tensor:
    """Residual stream after the embeddings and after every layer, pooled per text: [texts, layers + 1, hidden].

    `chat` renders each text as a user turn plus the generation prompt (what the model sees before answering);
    otherwise it is plain text. `pool` keeps the last position or the attention-masked mean. Texts are batched by
    length with left padding and matching position ids, so a text's states do not depend on its batch. The last
    layer is read before the final norm (HF's `hidden_states[-1]` is after it), like every other layer.
    Returns float32 on the CPU, in the order of `texts`.
    """
    base, norm, _ = _lens_parts(model)
    if chat:
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
            for t in texts
        ]
    encoded = tokenizer(list(texts), add_special_tokens=not chat)["input_ids"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out anyway
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    pooled: dict[int, torch.Tensor] = {}  # text index → its states (batches go by length)
    captured: list[torch.Tensor] = []
    hook = norm.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    try:
        with torch.inference_mode(), progress_bar() as progress:
            task = progress.add_task(description, total=len(encoded))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, mask, positions = left_pad([encoded[i] for i in idx], pad_id, device=model.device)
                captured.clear()
                out = base(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    output_hidden_states=True,
                    use_cache=False,
                )
                states = [*out.hidden_states[:-1], captured[-1]]
                if pool == "last":
                    batch = torch.stack([h[:, -1] for h in states], dim=1)
                else:
                    keep = mask[:, :, None].bool()
                    sums = torch.stack([torch.where(keep, h.float(), 0).sum(1) for h in states], dim=1)
                    batch = sums / mask.sum(1).clamp(min=1)[:, None, None]
                for row, i in enumerate(idx):
                    pooled[i] = batch[row].float().cpu()
                progress.advance(task, len(idx))
    finally:
        hook.remove()
    return torch.stack([pooled[i] for i in range(len(encoded))])


def logit_lens(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 8) -> Iterator[torch.Tensor]:
    """Yield per text (in order) its next-token distribution after every layer: [layers + 1, vocab].

    Each text is a chat user turn with the generation prompt; every layer's last-position state goes through the
    final norm and the LM head, so the last row is the model's own next-token distribution. (Models that change
    logits after the head, such as Gemma-2's soft-capping, would differ there.)
    """
    _, norm, head = _lens_parts(model)
    states = layer_states(model, tokenizer, texts, pool="last", chat=True, batch_size=batch_size, description="lens")
    weight = head.get_parameter("weight")
    for chunk in torch.split(states, batch_size):
        with torch.inference_mode():
            probs = torch.softmax(head(norm(chunk.to(weight.device, weight.dtype))).float(), dim=-1).cpu()
        yield from probs


def lens_stats(
    model: Any, tokenizer: Any, prompts: Sequence[Prompt], *, batch_size: int = 8
) -> dict[str, dict[str, Any]]:
    """Per prompt language (English first): `n` and, per layer, the means of `METRICS` over its prompts."""
    langs = sorted({p.lang for p in prompts} | {"en"}, key=lambda code: (code != "en", code))
    labels = token_languages(tokenizer, langs)
    # the head may have more rows than the tokenizer has tokens (padding): those belong to no language
    labels = torch.nn.functional.pad(labels, (0, model.get_output_embeddings().weight.shape[0] - len(labels)), value=-1)
    onehot = torch.stack([labels == k for k in range(len(langs))], dim=1).float()
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for prompt, probs in zip(
        prompts, logit_lens(model, tokenizer, [p.instruction for p in prompts], batch_size=batch_size), strict=True
    ):
        mass = probs @ onehot  # [layers + 1, langs]
        top = labels[probs.argmax(-1)]
        own = langs.index(prompt.lang)
        row = torch.stack([mass[:, 0], mass[:, own], (top == 0).float(), (top == own).float()])  # 0: English
        sums[prompt.lang] = sums[prompt.lang] + row if prompt.lang in sums else row
        counts[prompt.lang] = counts.get(prompt.lang, 0) + 1
    return {
        lang: {"n": counts[lang], **{m: (sums[lang][k] / counts[lang]).tolist() for k, m in enumerate(METRICS)}}
        for lang in langs
        if lang in counts
    }


def per_model(models: Mapping[str, str], analyze: Callable[[Any, Any], T], *, dtype: str = "auto") -> dict[str, T]:
    """`analyze(model, tokenizer)` for each label → spec, loading one model at a time and freeing it after use."""
    results: dict[str, T] = {}
    for label, spec in models.items():
        resolved = resolve_model(spec)
        tokenizer = load_tokenizer(resolved)
        model = load_model(resolved, dtype=dtype)
        results[label] = analyze(model, tokenizer)
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results


def run_logit_lens(models: Mapping[str, str], prompts: Sequence[Prompt], *, batch_size: int = 8) -> LensResults:
    """`lens_stats` of every model (label → spec) on the same prompts."""
    return per_model(models, lambda model, tokenizer: lens_stats(model, tokenizer, prompts, batch_size=batch_size))


def lens_table(results: LensResults) -> tuple[list[str], list[list[str]]]:
    """(columns, rows): per model and language, the layer of peak English mass and both masses mid-way and last."""
    columns = ["model", "lang", "n", "en peak", "en mid", "en last", "lang mid", "lang last"]
    rows = []
    for label, by_lang in results.items():
        for lang, s in by_lang.items():
            en, own = s["en_mass"], s["lang_mass"]
            mid = (len(en) - 1) // 2
            peak = max(range(len(en)), key=en.__getitem__)
            values = [en[mid], en[-1], own[mid], own[-1]]
            rows.append([label, lang, str(s["n"]), str(peak), *(f"{v:.3f}" for v in values)])
    return columns, rows


def plot_logit_lens(results: LensResults, path: Path) -> Path:
    """One panel per prompt language: English vs prompt-language mass per layer; one line style per model."""
    plt = pyplot()
    langs = list(dict.fromkeys(lang for by_lang in results.values() for lang in by_lang))
    ncols = min(len(langs), 4)
    nrows = math.ceil(len(langs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3 * nrows), sharey=True, squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, lang in zip(axes.flat, langs, strict=False):
        name = get_language(lang).name
        for m, (label, by_lang) in enumerate(results.items()):
            if lang not in by_lang:
                continue
            s, style = by_lang[lang], styles[m % len(styles)]
            layers = range(len(s["en_mass"]))
            ax.plot(layers, s["en_mass"], color="C0", linestyle=style, label=f"{label}: English")
            if lang != "en":
                ax.plot(layers, s["lang_mass"], color="C1", linestyle=style, label=f"{label}: {name}")
        ax.set_title(f"{name} prompts")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="x-small")
    for ax in axes[:, 0]:
        ax.set_ylabel("next-token probability mass")
    for ax in axes.flat[len(langs) :]:
        ax.set_visible(False)
    fig.suptitle("Logit lens: probability on English vs prompt-language tokens")
    return save_figure(fig, path)


def write_logit_lens(results: LensResults, out_dir: Path) -> list[Path]:
    """Write `logit_lens.json`, `logit_lens.md` (the `lens_table`) and `logit_lens.png` into `out_dir`."""
    out_dir = Path(out_dir)
    write_json(out_dir / "logit_lens.json", results)
    depths = sorted({len(s["en_mass"]) - 1 for by_lang in results.values() for s in by_lang.values()})
    notes = [
        "en / lang: mean next-token probability on English / prompt-language tokens; en peak: the layer where the",
        "English mass is highest. Layer 0 is the embedding output; "
        + ", ".join(f"mid is layer {d // 2} of {d}" for d in depths)
        + ".",
        "",
        "![logit lens](logit_lens.png)",
    ]
    return [
        out_dir / "logit_lens.json",
        write_markdown(out_dir / "logit_lens.md", "Logit lens", *lens_table(results), notes),
        plot_logit_lens(results, out_dir / "logit_lens.png"),
    ]
