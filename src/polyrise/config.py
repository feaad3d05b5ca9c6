"""The run config (YAML → pydantic), composed at the top: the common sections (`context.RunSettings`), the method's
`training` class and own sections, and the evaluation tasks, each looked up by name in `polyrise.plugins`.
Nothing below imports this module. Unknown keys are errors that name the key."""

from __future__ import annotations

import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError, model_validator

from polyrise.context import RunSettings
from polyrise.errors import PolyriseError
from polyrise.evaluation import parse_task
from polyrise.io import read_text
from polyrise.methods import Method, load_method
from polyrise.plugins import METHODS

__all__ = ["RunConfig", "load_config", "parse_config"]


def _nested(errors: list[Any], *prefix: str | int) -> list[Any]:
    """pydantic errors of a nested validation, placed under `prefix` (their location in the run config)."""
    return [
        {"type": e["type"], "loc": (*prefix, *e["loc"]), "input": e["input"]}
        | ({"ctx": e["ctx"]} if "ctx" in e else {})
        for e in errors
    ]


def _error(loc: tuple[str | int, ...], value: Any, message: str) -> dict[str, Any]:
    """One pydantic error at `loc` saying `message`."""
    return {"type": "value_error", "loc": loc, "input": value, "ctx": {"error": ValueError(message)}}


def _optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def _users(key: str) -> list[str]:
    """The methods that declare the section `key`."""
    return [name for name in METHODS if key in load_method(name).sections]


class RunConfig(RunSettings):
    """A run: the common sections, plus the sections of its method (attributes of their keys: `config.filters`;
    typed through `RunSettings.section`)."""

    model_config = ConfigDict(extra="allow")
    """The method's sections are composed by `_compose`, which refuses every other unknown key."""

    @model_validator(mode="before")
    @classmethod
    def _compose(cls, data: Any) -> Any:
        """Validate `training` as the method's class, its sections as theirs, each evaluation as its task's;
        refuse a section of another method and any unknown key."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        try:
            method: type[Method] | None = load_method(str(data.get("method", "language-imbalance")))
        except PolyriseError as e:
            method = None
            problem = str(e)
        errors: list[Any] = []
        if method is None:
            errors.append(_error(("method",), data.get("method"), problem))
        for key in [k for k in data if k not in cls.model_fields]:
            if method is not None and key in method.sections:
                continue
            users = _users(str(key))
            if not users:
                errors.append({"type": "extra_forbidden", "loc": (key,), "input": data[key]})
            elif method is not None:
                named = " and ".join(map(repr, users))
                article = "an" if str(key)[0] in "aeiou" else "a"
                message = f"{article} `{key}` section is only used by method{'s' if len(users) > 1 else ''} {named}"
                errors.append(_error((key,), data[key], message))
        if method is not None:
            training = data.get("training") or {}
            if not isinstance(training, method.training):
                try:
                    data["training"] = method.training.model_validate(training)
                except ValidationError as e:
                    errors += _nested(e.errors(), "training")
            for key, annotation in method.sections.items():
                value = data.get(key)
                try:
                    if value is None and _optional(annotation):
                        data[key] = None
                    elif value is None:
                        data[key] = TypeAdapter(annotation).validate_python({})
                    else:
                        data[key] = TypeAdapter(annotation).validate_python(value)
                except ValidationError as e:
                    if value is None:
                        errors.append(_error((key,), None, f"method {method.name!r} needs an `{key}` section"))
                    else:
                        errors += _nested(e.errors(), key)
        tasks = data.get("evaluation")
        if isinstance(tasks, list):
            parsed = []
            for i, task in enumerate(tasks):
                try:
                    parsed.append(parse_task(task))
                except ValidationError as e:
                    errors += _nested(e.errors(), "evaluation", i)
                except PolyriseError as e:
                    errors.append(_error(("evaluation", i), task, str(e)))
            data["evaluation"] = parsed
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data

    @model_validator(mode="after")
    def _method_checks(self) -> RunConfig:
        """The method's own checks beyond its sections' validation."""
        load_method(self.method).check(self)
        return self


_SHOWN_PROBLEMS = 10
"""A config's validation errors shown at most; the rest are counted."""


def load_config(path: str | Path, overrides: dict[str, object] | None = None) -> RunConfig:
    """Read a YAML run config; every problem is one PolyriseError naming the file and the key. `overrides`
    replace top-level keys before validation, as an edit of the file would."""
    path = Path(path)
    return parse_config(read_text(path, "config file"), path, overrides)  # missing, not UTF-8: one error


def parse_config(text: str, path: Path, overrides: dict[str, object] | None = None) -> RunConfig:
    """A run config from YAML `text` (errors name `path`): what `load_config` reads, and what `polyrise init`
    checks before it writes a file."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:  # its str() quotes the lines around the mistake: of whatever file this is
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise PolyriseError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or type(e).__name__}") from None
    if not isinstance(data, dict):
        raise PolyriseError(f"{path}: the top level must be a mapping of keys")
    if data and not data.keys() & RunConfig.model_fields.keys() and not data.keys() & _section_keys():
        raise PolyriseError(
            f"{path}: not a polyrise run config: none of its {len(data)} top-level keys is a config key "
            "(model, languages, method, ...; `polyrise init` writes one)"
        )
    data.update(overrides or {})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {key}: {msg}")
        if len(problems) > _SHOWN_PROBLEMS:
            problems[_SHOWN_PROBLEMS:] = [f"{path}: ... and {len(problems) - _SHOWN_PROBLEMS} more problems"]
        raise PolyriseError("\n".join(problems)) from None


def _section_keys() -> set[str]:
    """Every method's own section keys (`filters`, `implicit_reward`, ...): keys of a run config too."""
    return {key for name in METHODS for key in load_method(name).sections}
