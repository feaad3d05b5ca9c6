"""Load prompt sets: built-in files, JSONL/JSON files (optionally one per language), or HF datasets."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from polyrise.errors import PolyriseError
from polyrise.io import load_rows, read_jsonl
from polyrise.records import Instruction, Prompt
from polyrise.settings import PromptSource

BUILTIN_PREFIX = "builtin:"
HF_PREFIX = "hf:"


class _PromptRow(BaseModel):
    """A row of a user's prompt file: `id` + `instruction` (+ optional `lang`, and `answer`: a gold answer);
    other fields are ignored."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)
    id: str
    instruction: Instruction
    lang: str | None = None
    answer: str | None = None


def builtin_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".jsonl") for p in resources.files("polyrise.data").iterdir() if p.name.endswith(".jsonl")
    )


def _hf_rows(source: PromptSource) -> list[_PromptRow]:
    import datasets

    name = source.source.removeprefix(HF_PREFIX)
    try:
        data = datasets.load_dataset(name, split=source.split)
    except Exception as e:  # datasets raises many types (network, missing split, ...)
        raise PolyriseError(f"cannot load dataset {name!r} split {source.split!r}: {e}") from None
    for col in filter(None, [source.column, source.id_column]):
        if col not in data.column_names:
            raise PolyriseError(f"dataset {name!r} has no column {col!r}; columns: {data.column_names}")
    ids = data[source.id_column] if source.id_column else [f"{name}-{i}" for i in range(len(data))]
    rows = []
    for row, (pid, text) in enumerate(zip(ids, data[source.column], strict=True)):
        try:
            rows.append(_PromptRow(id=str(pid), instruction=text))
        except ValidationError as e:
            raise PolyriseError(f"dataset {name!r} row {row}: {source.column}: {e.errors()[0]['msg']}") from None
    return rows


def load_prompts(source: PromptSource, langs: list[str], default_lang: str = "en") -> list[Prompt]:
    """Prompts of `source` in `langs`. A path containing `{lang}` is read once per language.

    Rows without `lang` are in `default_lang`. `limit` keeps the first N prompt ids.
    """
    spec = source.source
    per_file: list[tuple[str, list[_PromptRow]]] = []
    if spec.startswith(BUILTIN_PREFIX):
        name = spec.removeprefix(BUILTIN_PREFIX)
        if name not in builtin_names():
            raise PolyriseError(f"unknown built-in prompt set {name!r}; known: {', '.join(builtin_names())}")
        with resources.as_file(resources.files("polyrise.data") / f"{name}.jsonl") as path:
            per_file.append((default_lang, read_jsonl(path, _PromptRow)))
    elif spec.startswith(HF_PREFIX):
        per_file.append((default_lang, _hf_rows(source)))
    else:  # a {lang} template's rows carry their file's language; a repeated id is an error naming both lines
        rows = load_rows(
            spec, langs if "{lang}" in spec else None, _PromptRow, unique_ids=True, default_lang=default_lang
        )
        per_file.append((default_lang, rows))

    prompts: dict[tuple[str, str], Prompt] = {}
    for file_lang, rows in per_file:
        for row in rows:
            lang = row.lang or file_lang
            if lang not in langs:
                continue
            if (row.id, lang) in prompts:  # a file's duplicates are reported above, with their lines
                raise PolyriseError(f"prompt source {spec!r}: duplicate id {row.id!r} in language {lang!r}")
            prompts[row.id, lang] = Prompt(id=row.id, lang=lang, instruction=row.instruction, answer=row.answer)
    order = list(dict.fromkeys(pid for pid, _ in prompts))
    keep = set(order[: source.limit] if source.limit else order)
    selected = [p for key, p in prompts.items() if key[0] in keep]
    if not selected:
        raise PolyriseError(f"prompt source {spec!r} has no prompts in languages {langs}")
    return selected


def source_files(value: str, langs: Sequence[str]) -> list[Path]:
    """The local files a source or path setting reads (a `{lang}` template once per language): what a stage hashes
    so that an edited data file reruns it. Built-in sets, HF ids, presets and missing paths give none."""
    if value.startswith((BUILTIN_PREFIX, HF_PREFIX)) or not value:
        return []
    paths = [Path(value.replace("{lang}", lang)) for lang in langs] if "{lang}" in value else [Path(value)]
    return [p for p in dict.fromkeys(paths) if _is_file(p)]


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # not a path at all (too long a name)
        return False
