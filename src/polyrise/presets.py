"""`polyrise init`: a commented run config written from a preset. The presets are the example configs themselves,
shipped as package data (`data/presets/<name>.yaml`, links to `examples/` in the repository), with the model and
the languages put into the YAML text, so every comment of the example stays where it was."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from polyrise.config import parse_config
from polyrise.errors import PolyriseError
from polyrise.io import atomic_open
from polyrise.models import EMBEDDED, EMBEDDED_PREFIX, resolve_model

PRESET_DIR = files("polyrise.data") / "presets"


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in PRESET_DIR.iterdir() if p.name.endswith(".yaml"))


def check_model_spec(spec: str) -> None:
    """`spec` is a model spec a run can resolve: `embedded:<known name>`, a model or adapter directory, or a
    well-formed Hugging Face id (not looked up: init works offline). The embedded model is not converted here."""
    if spec.startswith(EMBEDDED_PREFIX):
        if spec.removeprefix(EMBEDDED_PREFIX) not in EMBEDDED:
            raise PolyriseError(f"--model {spec!r}: unknown embedded model; known: {', '.join(EMBEDDED)}")
        return
    try:
        resolve_model(spec)
    except PolyriseError as e:  # `--model 'x': ...` when the message starts with the spec
        raise PolyriseError(f"--model {e}" if str(e).startswith(repr(spec)) else f"--model: {e}") from None


def _value_node(root: yaml.Node | None, *keys: str) -> yaml.Node | None:
    """The value node at `keys` in a composed YAML mapping (None: an empty document), or None."""
    node: yaml.Node | None = root
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((v for k, v in node.value if k.value == key), None)
    return node


def render_preset(preset: str, model: str | None = None, languages: Sequence[str] | None = None) -> str:
    """The preset's YAML text with `model.spec` and `languages` (and each evaluation's `langs`: the source language
    and these) replaced in place; the rest of the text, comments included, is the preset's."""
    if preset not in preset_names():
        raise PolyriseError(f"--preset: unknown preset {preset!r}; known: {', '.join(preset_names())}")
    text = (PRESET_DIR / f"{preset}.yaml").read_text(encoding="utf-8")
    root = yaml.compose(text)
    edits: list[tuple[yaml.Node | None, Any]] = []
    if model is not None:
        check_model_spec(model)
        edits.append((_value_node(root, "model", "spec"), model))
    if languages is not None:
        source = _value_node(root, "source_lang")
        edits.append((_value_node(root, "languages"), list(languages)))
        tasks = _value_node(root, "evaluation")
        for task in tasks.value if isinstance(tasks, yaml.SequenceNode) else []:
            if (langs := _value_node(task, "langs")) is not None:
                edits.append((langs, [source.value if source else "en", *languages]))
    spans = []
    for node, value in edits:
        assert node is not None, f"preset {preset} lacks a key that init sets"
        flow = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6)
        spans.append((node.start_mark.index, node.end_mark.index, flow.removesuffix("...\n").strip()))
    for start, end, value in sorted(spans, reverse=True):  # from the end, so earlier offsets stay valid
        text = text[:start] + value + text[end:]
    if edits:
        changed = " and ".join(k for k, v in (("model.spec", model), ("the languages", languages)) if v is not None)
        note = f"# `polyrise init --preset {preset}` with {changed} of your choice; the comments describe the preset."
        text = f"{note}\n{text}"
    return text


def write_preset(
    out: Path,
    preset: str,
    model: str | None = None,
    languages: Sequence[str] | None = None,
    force: bool = False,
) -> None:
    """Write the rendered preset to `out` atomically, once it validates as a run config; an existing file is
    replaced only with `force`."""
    if out.exists() and not force:
        raise PolyriseError(f"{out} exists; pass --force to overwrite it")
    if out.is_dir():
        raise PolyriseError(f"{out} is a directory; --out names the config file to write")
    text = render_preset(preset, model, languages)
    parse_config(text, out)  # errors name the file and key, and nothing is written
    with atomic_open(out) as fh:
        fh.write(text)
