"""Representation similarity: how close each language's sentence representations sit to English's, per layer.

Aligned sentences (same prompt id in every language) are encoded as plain text and mean-pooled per layer; the
mean cosine similarity of a language to English per layer ranks the languages (low-resource languages sit further
from English), and a 2-D PCA at one layer shows whether languages cluster apart or mix (alignment should mix them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from polyrise.analysis.logit_lens import layer_states, per_model
from polyrise.analysis.writing import pyplot, save_figure, write_markdown
from polyrise.errors import PolyriseError
from polyrise.io import write_json
from polyrise.records import Prompt

SimilarityResults = dict[str, dict[str, Any]]
"""model label → {"pca_layer": k, "langs": {lang: {"n": aligned ids, "similarity": [per layer], "pca": [[x, y]]}}}."""


def sentence_states(
    model: Any, tokenizer: Any, prompts: Sequence[Prompt], *, batch_size: int = 8
) -> dict[str, dict[str, torch.Tensor]]:
    """lang → prompt id → its instruction's mean-pooled states as plain text: [layers + 1, hidden]."""
    states = layer_states(
        model,
        tokenizer,
        [p.instruction for p in prompts],
        pool="mean",
        chat=False,
        batch_size=batch_size,
        description="sentence states",
    )
    by_lang: dict[str, dict[str, torch.Tensor]] = {}
    for prompt, state in zip(prompts, states, strict=True):
        by_lang.setdefault(prompt.lang, {})[prompt.id] = state
    return by_lang


def similarity_to_english(states: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, dict[str, Any]]:
    """Per language: `n` ids it shares with English and, per layer, the mean cosine similarity over those ids of
    its representation to the English one (English itself: 1 everywhere)."""
    if "en" not in states:
        raise PolyriseError("similarity to English needs English sentences among the prompts")
    en = states["en"]
    result = {}
    for lang, by_id in states.items():
        ids = [i for i in by_id if i in en]
        if not ids:
            raise PolyriseError(f"no {lang} prompt shares an id with an English one; the prompts must be aligned")
        a, b = torch.stack([by_id[i] for i in ids]), torch.stack([en[i] for i in ids])
        result[lang] = {"n": len(ids), "similarity": torch.cosine_similarity(a, b, dim=-1).mean(0).tolist()}
    return result


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """Rows of `x` [n, d] projected on their first two principal components: [n, 2] (zeros where x has fewer).

    Each axis' sign is fixed so that its largest loading is positive: the same data always gives the same picture.
    """
    centered = x.float() - x.float().mean(0)
    axes = torch.linalg.svd(centered, full_matrices=False).Vh[:2]
    axes = axes * axes.gather(1, axes.abs().argmax(1, keepdim=True)).sign()
    return torch.nn.functional.pad(centered @ axes.T, (0, 2 - len(axes)))


def model_similarity(
    model: Any, tokenizer: Any, prompts: Sequence[Prompt], *, batch_size: int = 8, layer: int | None = None
) -> dict[str, Any]:
    """One model's `similarity_to_english` per language (English first) plus its sentences' PCA coordinates at
    `layer` (0 = embeddings; default: the middle layer)."""
    n_layers = model.config.num_hidden_layers
    layer = n_layers // 2 if layer is None else layer
    if not 0 <= layer <= n_layers:
        raise PolyriseError(f"layer {layer} does not exist: the model has layers 0 (embeddings) to {n_layers}")
    states = sentence_states(model, tokenizer, prompts, batch_size=batch_size)
    states = {lang: states[lang] for lang in sorted(states, key=lambda code: code != "en")}
    langs = similarity_to_english(states)
    points = pca_2d(torch.cat([torch.stack(list(by_id.values()))[:, layer] for by_id in states.values()]))
    for lang, chunk in zip(states, torch.split(points, [len(b) for b in states.values()]), strict=True):
        langs[lang]["pca"] = chunk.tolist()
    return {"pca_layer": layer, "langs": langs}


def run_similarity(
    models: Mapping[str, str], prompts: Sequence[Prompt], *, batch_size: int = 8, layer: int | None = None
) -> SimilarityResults:
    """`model_similarity` of every model (label → spec) on the same prompts."""
    return per_model(
        models, lambda model, tokenizer: model_similarity(model, tokenizer, prompts, batch_size=batch_size, layer=layer)
    )


def similarity_table(results: SimilarityResults) -> tuple[list[str], list[list[str]]]:
    """(columns, rows): the language ranker. Languages other than English, most similar to English first (by the
    first model's mean over layers); per model the mean over layers and the value at the middle layer."""
    columns = ["rank", "lang"]
    values: dict[str, list[float]] = {}
    for label, result in results.items():
        mid = (len(result["langs"]["en"]["similarity"]) - 1) // 2
        columns += [f"{label} mean", f"{label} L{mid}"]
        for lang, s in result["langs"].items():
            sims = s["similarity"]
            values.setdefault(lang, []).extend([sum(sims) / len(sims), sims[mid]])
    ranked = sorted((lang for lang in values if lang != "en"), key=lambda lang: -values[lang][0])
    return columns, [[str(k), lang, *(f"{v:.3f}" for v in values[lang])] for k, lang in enumerate(ranked, 1)]


def plot_similarity(results: SimilarityResults, path: Path) -> Path:
    """One panel per model: cosine similarity to English per layer, one line per language."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(max(6.0, 4.5 * len(results)), 3.4), sharey=True, squeeze=False)
    for ax, (label, result) in zip(axes[0], results.items(), strict=True):
        for k, (lang, s) in enumerate(result["langs"].items()):
            if lang != "en":
                ax.plot(range(len(s["similarity"])), s["similarity"], color=f"C{k % 10}", label=lang)
        ax.set_title(label)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.legend(fontsize="x-small", ncol=2)
    axes[0, 0].set_ylabel("cosine similarity to English")
    fig.suptitle("Sentence representations: similarity to English per layer")
    return save_figure(fig, path)


def plot_pca(results: SimilarityResults, path: Path) -> Path:
    """One panel per model (same axes): the sentences' 2-D PCA at the analysed layer, coloured by language."""
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(results), figsize=(max(6.0, 4.5 * len(results)), 4), sharex=True, sharey=True, squeeze=False
    )
    for ax, (label, result) in zip(axes[0], results.items(), strict=True):
        for k, (lang, s) in enumerate(result["langs"].items()):
            xy = torch.tensor(s["pca"]).reshape(-1, 2)
            ax.scatter(xy[:, 0], xy[:, 1], s=12, alpha=0.7, color=f"C{k % 10}", label=lang)
        ax.set_title(f"{label}: layer {result['pca_layer']}")
        ax.set_xlabel("PC 1")
        ax.legend(fontsize="x-small", ncol=2)
    axes[0, 0].set_ylabel("PC 2")
    fig.suptitle("Sentence representations: PCA, coloured by language")
    return save_figure(fig, path)


def write_similarity(results: SimilarityResults, out_dir: Path) -> list[Path]:
    """Write `similarity.json`, `similarity.md` (the `similarity_table`), `similarity.png` and
    `similarity_pca.png` into `out_dir`."""
    out_dir = Path(out_dir)
    write_json(out_dir / "similarity.json", results)
    notes = [
        "Mean cosine similarity of mean-pooled sentence representations to their English translations;",
        "mean over all layers (0 = embeddings) and at the middle layer.",
        "",
        "![similarity per layer](similarity.png)",
        "",
        "![PCA](similarity_pca.png)",
    ]
    return [
        out_dir / "similarity.json",
        write_markdown(out_dir / "similarity.md", "Similarity to English", *similarity_table(results), notes),
        plot_similarity(results, out_dir / "similarity.png"),
        plot_pca(results, out_dir / "similarity_pca.png"),
    ]
