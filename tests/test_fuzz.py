"""Fuzz the input boundary (hypothesis): JSONL rows, raw bytes, config mappings, scores files and pair inputs. Every
input ends in success or in one PolyriseError (one `error:` line, exit 1) — never another exception. The number of
inputs tried is printed."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from polyrise.cli import app
from polyrise.config import load_config
from polyrise.errors import PolyriseError

TRIED: Counter[str] = Counter()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
langs = st.sampled_from(["en", "es", "de", "zh", "ru", "th", "qaa", "xx", "", "EN"])
rows = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=6), st.integers(0, 5), values),
        "lang": st.one_of(langs, values),
        "output": st.one_of(st.text(max_size=200), values),
        "gold": st.one_of(st.text(max_size=6), st.integers(-5, 50), values),
        "instruction": st.one_of(st.text(max_size=80), values),
    },
)
lines = st.one_of(rows.map(json.dumps), values.map(json.dumps), st.text(max_size=60))


def _ok(result, what: str) -> None:
    """Success, or exit 1 with a PolyriseError; never an unexpected exception."""
    TRIED[what] += 1
    if result.exit_code == 0:
        return
    assert result.exit_code in (1, 2), (what, result.exit_code, result.output)
    if result.exit_code == 1:
        assert isinstance(result.exception, PolyriseError), (what, repr(result.exception))


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    print(f"\nfuzz inputs tried: {sum(TRIED.values())} ({', '.join(f'{k} {v}' for k, v in sorted(TRIED.items()))})")


@FUZZ
@given(content=st.lists(lines, max_size=6), task=st.sampled_from(["langid", "mgsm"]))
def test_score_files_of_any_rows(tmp_path_factory, content, task):
    path = tmp_path_factory.mktemp("score") / "outputs.jsonl"
    path.write_text("\n".join(content) + "\n")
    _ok(CliRunner().invoke(app, ["score", task, str(path)]), f"score {task} rows")


@FUZZ
@given(data=st.binary(max_size=300))
def test_score_files_of_any_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "outputs.jsonl"
    path.write_bytes(data)
    _ok(CliRunner().invoke(app, ["score", "langid", str(path)]), "score bytes")


sections = st.sampled_from(
    ["name", "languages", "iterations", "model", "prompts", "generation", "filters", "langid", "training", "heldout",
     "evaluation", "method", "seed", "reward_judge", "output_dir", "source_lang"]
)  # fmt: skip


@FUZZ
@given(mapping=st.dictionaries(sections, values, max_size=5), raw=st.booleans(), text=st.text(max_size=80))
def test_configs_of_any_mapping(tmp_path_factory, mapping, raw, text):
    path = tmp_path_factory.mktemp("config") / "run.yaml"
    path.write_text(text if raw else yaml.safe_dump(mapping, allow_unicode=True))
    TRIED["config"] += 1
    with contextlib.suppress(PolyriseError):  # anything else fails the test
        load_config(path)


@FUZZ
@given(scores=values)
def test_report_of_any_scores(tmp_path_factory, scores):
    folder = tmp_path_factory.mktemp("report")
    (folder / "scores.json").write_text(json.dumps(scores))
    _ok(CliRunner().invoke(app, ["report", str(folder)]), "report")


@FUZZ
@given(
    prompts=st.lists(lines, max_size=4), responses=st.lists(lines, max_size=4), translations=st.lists(lines, max_size=4)
)
def test_pairs_of_any_files(tmp_path_factory, prompts, responses, translations):
    folder = tmp_path_factory.mktemp("pairs")
    paths = {}
    for name, content in (("prompts", prompts), ("responses", responses), ("translations", translations)):
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("\n".join(content) + "\n")
    args = ["pairs", "--languages", "es", "--out", str(folder / "pairs.jsonl")]
    args += [f"--{name}={path}" for name, path in paths.items()]
    _ok(CliRunner().invoke(app, args), "pairs")
    if not (folder / "pairs.jsonl").exists():
        assert not Path(folder / "pairs_stats.json").exists()  # nothing half-written


names = st.lists(st.sampled_from(["..", ".", "a", "/", "\\", "\0", "b c", "é", "~", "-"]), max_size=4).map("".join)


@FUZZ
@given(run=names, task=names, label=names)
def test_names_that_become_file_names_stay_in_their_directory(tmp_path_factory, run, task, label):
    from polyrise.api import merge_scores

    root = tmp_path_factory.mktemp("names")
    work = root / "a" / "b"
    work.mkdir(parents=True)
    path = work / "run.yaml"
    evaluation = {"task": "mgsm", "source": "builtin:gsm-symbolic", "name": task}
    path.write_text(yaml.safe_dump({"name": run, "output_dir": str(work), "evaluation": [evaluation]}))
    TRIED["names"] += 1
    try:
        config = load_config(path)
        assert config.run_dir.parent == work and config.run_dir.name == run
        assert (work / f"{config.evaluation[0].key}_x.jsonl").parent == work
    except PolyriseError as e:
        assert "not one path component" in str(e)
    try:
        merge_scores(work / "eval", task, label, {"en": {"accuracy": 1.0}})
    except PolyriseError as e:
        assert "not one path component" in str(e)
    written = {str(p.relative_to(root)) for p in root.rglob("*")}
    assert written <= {"a", "a/b", "a/b/run.yaml", "a/b/eval", "a/b/eval/scores.json"}, written


spec_parts = ["Qwen", "/", ".", "..", "~", "-", "_", "2.5", "0.5B", "a b", "\\", "--", "v0.3"]
specs = st.one_of(st.text(max_size=30), st.lists(st.sampled_from(spec_parts), max_size=5).map("".join))


@FUZZ
@given(spec=specs)
def test_model_specs_are_a_path_a_hub_id_or_one_error(tmp_path_factory, spec):
    from huggingface_hub.utils import validate_repo_id

    from polyrise.models import resolve_model

    TRIED["model specs"] += 1
    if spec.startswith("embedded:"):
        return
    try:
        resolved = resolve_model(spec)
    except PolyriseError:
        return
    if not resolved.is_local:  # a Hub id, by huggingface_hub's own rule: never a path-like spec
        validate_repo_id(spec)
        assert not spec.startswith(("/", "./", "../", "~")) and spec.count("/") <= 1
