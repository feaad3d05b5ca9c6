"""Fuzz the input boundary (hypothesis): JSONL rows, raw bytes, config mappings, scores files and pair inputs. Every
input ends in success or in one PolyriseError (one `error:` line, exit 1) — never another exception. The number of
inputs tried is printed."""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from polyrise import plugins
from polyrise.cli import app
from polyrise.config import load_config
from polyrise.errors import PolyriseError
from polyrise.settings import SamplingSettings, Section

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


# Every numeric setting, generated from the settings classes themselves: below, at and above each bound, inf, nan.


def _settings_classes() -> list[type[Section]]:
    """Every config section polyrise defines (the methods' and tasks' own included)."""
    for kind, mapping in (("method", plugins.METHODS), ("task", plugins.TASKS)):
        for name in mapping:
            plugins.load(kind, mapping, name)
    found, todo = [], [Section]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.startswith("polyrise."):
            found.append(cls)
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _numeric_fields() -> Iterator[tuple[type[Section], str, FieldInfo]]:
    """(class, name, field) of every int or float field a class declares (not inherits)."""
    for cls in _settings_classes():
        for name, info in cls.model_fields.items():
            if name in vars(cls).get("__annotations__", {}) and info.annotation in (
                int,
                float,
                int | None,
                float | None,
            ):
                yield cls, name, info


def _bounds(info: FieldInfo) -> tuple[Any, Any]:
    """The field's (lower, upper) bound metadata (annotated_types Ge/Gt, Le/Lt), None where it has none."""
    lower = next((m for m in info.metadata if isinstance(m, (annotated_types.Ge, annotated_types.Gt))), None)
    upper = next((m for m in info.metadata if isinstance(m, (annotated_types.Le, annotated_types.Lt))), None)
    return lower, upper


def _bound_cases() -> Iterator[tuple[type[Section], str, Any, bool]]:
    """(class, field, value, valid): at, just inside and just beyond each bound, and inf, -inf, nan for floats."""
    for cls, name, info in _numeric_fields():
        lower, upper = _bounds(info)
        is_float = info.annotation in (float, float | None)
        down = (lambda v: math.nextafter(v, -math.inf)) if is_float else (lambda v: v - 1)
        up = (lambda v: math.nextafter(v, math.inf)) if is_float else (lambda v: v + 1)
        if isinstance(lower, annotated_types.Ge):
            yield cls, name, lower.ge, True
            yield cls, name, down(lower.ge), False
        elif isinstance(lower, annotated_types.Gt):
            yield cls, name, lower.gt, False
            yield cls, name, up(lower.gt), True
        if isinstance(upper, annotated_types.Le):
            yield cls, name, upper.le, True
            yield cls, name, up(upper.le), False
        elif isinstance(upper, annotated_types.Lt):
            yield cls, name, upper.lt, False
            yield cls, name, down(upper.lt), True
        if is_float:
            yield from ((cls, name, value, False) for value in (math.inf, -math.inf, math.nan))


def _field_errors(cls: type[Section], name: str, value: Any) -> list[Any]:
    """The validation errors of `name` when a section of `cls` gives it `value` (other fields' errors left out)."""
    try:
        cls.model_validate({name: value})
    except ValidationError as e:
        return [err for err in e.errors() if err["loc"][:1] == (name,)]
    return []


@pytest.mark.parametrize(("cls", "name", "info"), list(_numeric_fields()), ids=lambda v: getattr(v, "__name__", v))
def test_every_numeric_setting_is_bounded_on_both_sides(cls, name, info):
    lower, upper = _bounds(info)
    assert lower is not None and upper is not None, f"{cls.__name__}.{name} needs a lower and an upper bound"


@pytest.mark.parametrize(("cls", "name", "value", "valid"), list(_bound_cases()), ids=str)
def test_every_numeric_setting_at_below_and_above_its_bounds(cls, name, value, valid):
    TRIED["setting bounds"] += 1
    errors = _field_errors(cls, name, value)
    assert not errors if valid else errors, (cls.__name__, name, value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("seed", -1), ("seed", 2**32), ("seed", 1e30), ("iterations", 10**9), ("iterations", 0),
     ("training", {"epochs": math.inf}), ("training", {"epochs": math.nan}), ("training", {"epochs": 1e6}),
     ("training", {"learning_rate": 10.0}), ("generation", {"answer": {"temperature": -1}}),
     ("generation", {"answer": {"top_p": 2}}), ("generation", {"answer": {"max_new_tokens": 0}})],
)  # fmt: skip
def test_a_number_out_of_bounds_in_a_config_is_one_error_naming_the_key_before_any_work(tmp_path, key, value):
    """Through the command line, `run --dry-run` (a 10^9-iteration plan used to grow without end)."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({key: value, "output_dir": str(tmp_path / "runs")}))
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 1 and isinstance(result.exception, PolyriseError), result.output
    assert str(result.exception).startswith(f"{path}: {key}") and "\n" not in str(result.exception)
    assert not (tmp_path / "runs").exists()


def _option_cases() -> Iterator[tuple[list[str], str, Any]]:
    """(command, option, value beyond its bound): each numeric option of `generate` from the bounds of the settings
    field it sets, and the seeds and counts of the other commands."""
    fields = {"max-new-tokens": "max_new_tokens", "temperature": "temperature", "top-p": "top_p",
              "repetition-penalty": "repetition_penalty", "seed": "seed"}  # fmt: skip
    for option, name in fields.items():
        info = SamplingSettings.model_fields[name]
        lower, upper = _bounds(info)
        beyond = [getattr(lower, "ge", 0) - 1 if hasattr(lower, "ge") else lower.gt]
        beyond.append(upper.le + 1 if hasattr(upper, "le") else upper.lt)
        if info.annotation is float:
            beyond += ["nan", "inf", "-inf"]
        yield from ((["generate"], option, value) for value in beyond)
    yield from ((["generate"], "batch-size", v) for v in (0, 65537))
    yield from ((["translate", "--to", "es"], "max-new-tokens", v) for v in (0, 2**20 + 1))
    yield from ((["eval", "--task", "mgsm"], option, v) for option in ("seed", "limit") for v in (-1, 2**32))
    score = (("seed", -1), ("seed", 2**32), ("min-words", 10**10))
    yield from ((["score", "langid"], option, v) for option, v in score)


@pytest.mark.parametrize(("command", "option", "value"), list(_option_cases()), ids=str)
def test_a_numeric_option_beyond_its_bound_is_one_error_naming_it_and_nothing_is_written(
    tmp_path, command, option, value
):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "1", "lang": "en", "instruction": "hi", "output": "hi"}) + "\n")
    out = tmp_path / "out"
    where = [str(prompts), "-o", str(out)] if command[0] in ("generate", "translate") else ["-o", str(out)]
    if command[0] == "score":
        where = [str(prompts), "--out", str(out)]
    TRIED["option bounds"] += 1
    result = CliRunner().invoke(app, [*command, *where, f"--{option}", str(value)])
    assert result.exit_code == 1 and isinstance(result.exception, PolyriseError), (result.output, result.exception)
    assert str(result.exception).startswith(f"--{option}: ") and "\n" not in str(result.exception)
    assert not out.exists()


# A misbehaving server: any 200 body, any failure status and Retry-After: an answer, or one PolyriseError naming the
# server (`tests/test_openai_engine.py` holds the named cases).

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70), values)
chat_answers = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries({"message": st.fixed_dictionaries({"content": st.one_of(st.text(), values)})}),
            max_size=3,
        )
    }
)
scored_answers = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries(
                {
                    "logprobs": st.fixed_dictionaries(
                        {
                            "token_logprobs": st.lists(numbers, max_size=4),
                            "text_offset": st.lists(st.one_of(st.integers(-2, 6), values), max_size=4),
                        }
                    )
                }
            ),
            max_size=2,
        )
    }
)
bodies = st.one_of(
    chat_answers.map(json.dumps), scored_answers.map(json.dumps), values.map(json.dumps), st.binary(max_size=80)
)
failures = st.one_of(st.none(), st.sampled_from([400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503]))
retry_after = st.one_of(
    st.just({"retry-after-ms": "1"}),
    st.builds(
        lambda v: {"retry-after": v},
        st.sampled_from(["0", "0.01", "-5", "x", "1e9", "Wed, 21 Oct 2015 07:28:00 GMT", "nan"]),
    ),
)


@FUZZ
@given(body=bodies, status=failures, headers=retry_after, scoring=st.booleans())
def test_an_openai_server_answering_anything_gives_an_answer_or_one_error_naming_it(
    server, body, status, headers, scoring
):
    from polyrise.generation import ChatRequest
    from polyrise.generation.openai import OpenAIEngine
    from polyrise.settings import OpenAISettings

    server.raw_reply = body if isinstance(body, bytes) else body.encode()
    server.always, server.fail_headers = status, headers
    engine = OpenAIEngine(
        OpenAISettings(base_url=server.base_url, model="m", api_key_env=None, timeout=5, max_retries=1)
    )
    TRIED["openai answers"] += 1
    try:
        if scoring:
            for value in engine.loglikelihood([("ab", "cd")])[0].token_logprobs:
                assert math.isfinite(value) and value <= 1e-6
        else:
            assert isinstance(engine.complete([ChatRequest.user("x")], SamplingSettings())[0], str)
    except PolyriseError as e:
        assert str(e).startswith(f"{server.base_url}/") or "needs the completions endpoint" in str(e), str(e)
        assert server.base_url in str(e) and "\n" not in str(e)


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
