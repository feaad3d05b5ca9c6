"""polyrise's Python API: one typed function per user action, the code path of the `polyrise` command (which parses
its options, calls one of these and prints the result).

They take paths and settings objects and return data; a user mistake raises `PolyriseError` (its message names the
file, key or option, as the command's `error:` line does). Nothing is printed except through the `console` a
function takes, where the command shows progress; without one it works silently. Heavy libraries are imported
inside the functions, so `import polyrise` stays instant.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from polyrise.errors import PolyriseError

if TYPE_CHECKING:
    from datasets import Dataset
    from pydantic import BaseModel
    from rich.console import Console

    from polyrise.config import RunConfig
    from polyrise.evaluation import TaskSettings
    from polyrise.generation import Generator
    from polyrise.records import TextToTranslate
    from polyrise.sandbox import SandboxInfo
    from polyrise.self_translation import TranslationJob
    from polyrise.settings import EngineSettings, SamplingSettings

DEFAULT_MODEL = "embedded:smollm2-135m-instruct"
DEFAULT_LANGS = ("en", "es", "de", "fr")
M = TypeVar("M", bound="BaseModel")


def from_options(cls: type[M], flag: str = "", names: Mapping[str, str] | None = None, **values: Any) -> M:
    """`cls(**values)`, the values given as the options `--{flag}<name>` (or `--{names[field]}` where the option is
    named otherwise): validated by the settings class a config is (bounds, finiteness), so a value out of range is
    one error naming the option (`--top-p: ...`)."""
    from pydantic import ValidationError

    try:
        return cls(**values)
    except ValidationError as e:
        err = e.errors()[0]
        field = "-".join(str(p) for p in err["loc"])
        option = (names or {}).get(field) or field.replace("_", "-") or "engine"
        raise PolyriseError(f"--{flag}{option}: {err['msg'].removeprefix('Value error, ')}") from None


def _seed(seed: int) -> int:
    """`seed` if numpy and torch take it, else one error naming the option."""
    from polyrise.settings import SEEDS

    if not 0 <= seed < SEEDS:
        raise PolyriseError(f"--seed: {seed} is not a seed; seeds are in [0, {SEEDS})")
    return seed


def _quiet(console: Console | None) -> Console:
    """`console`, or one that prints nothing."""
    from rich.console import Console

    return console or Console(quiet=True)


def _languages(codes: Sequence[str]) -> list[str]:
    """`codes` as a list, each a language polyrise knows (else one error listing the known codes)."""
    from polyrise.languages import get_language

    for code in codes:
        get_language(code)
    return list(codes)


# ---------------------------------------------------------------- the loop


def load_run_config(
    config: Path | str | RunConfig,
    *,
    iterations: int | None = None,
    name: str | None = None,
    output_dir: Path | None = None,
    num_processes: int | None = None,
    accelerate_config: Path | None = None,
    ray_address: str | None = None,
) -> RunConfig:
    """The config a run uses: a YAML file (or a `RunConfig`) with the given top-level overrides applied as an edit of
    the file would be (validated, and part of what decides whether a stage is up to date), and the training's launch
    settings and the Ray cluster's address (`ray_address`: a `cluster` section if the file has none) replaced. An
    accelerate config is checked now, not when the first training stage starts: a run without a cluster trains on
    this machine only, so one for several machines is an error."""
    from polyrise.config import load_config, parse_config
    from polyrise.settings import ClusterSettings
    from polyrise.training.launch import check_accelerate_config

    overrides: dict[str, object] = {"iterations": iterations, "output_dir": output_dir, "name": name}
    given = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(config, Path | str):
        cfg = load_config(config, given)
    else:
        cfg = parse_config(config.to_yaml(), Path("<RunConfig>"), given) if given else config.model_copy(deep=True)
    launch = {"num_processes": num_processes, "accelerate_config": accelerate_config}
    if any(v is not None for v in launch.values()):
        cfg.training = cfg.training.model_validate(
            cfg.training.model_dump() | {k: v for k, v in launch.items() if v is not None}
        )
    if ray_address is not None:
        cfg.cluster = (cfg.cluster or ClusterSettings()).model_copy(update={"address": ray_address})
    if cfg.training.accelerate_config is not None:
        path, machines = check_accelerate_config(cfg.training.accelerate_config)
        if machines > 1 and cfg.cluster is None:
            raise PolyriseError(
                f"{path} trains on {machines} machines, and a run without a `cluster` trains on this one only: run it "
                "on a Ray cluster (cluster: {backend: ray}, or --ray-address), or train an iteration's pairs across "
                "machines with polyrise train --machine-rank K on each (see docs/running-on-gpus.md)"
            )
    return cfg


def run(
    config: Path | str | RunConfig,
    *,
    iterations: int | None = None,
    name: str | None = None,
    output_dir: Path | None = None,
    num_processes: int | None = None,
    accelerate_config: Path | None = None,
    ray_address: str | None = None,
    verbose: bool = False,
    console: Console | None = None,
) -> Path:
    """Run every iteration of a config's method, resuming where an earlier run stopped; returns the run directory.

    The overrides are those of `load_run_config` (`ray_address`: run on that Ray cluster, `HOST:PORT` or `auto`).
    `console` shows the stages, progress and result tables; `verbose`
    the libraries' output too (it is always in the run's `logs/`). Ctrl-C raises `runner.StageInterrupted` (a
    KeyboardInterrupt naming the stage) during a stage; finished stages are kept, and the same call resumes."""
    from polyrise.reporting import scores_table
    from polyrise.runner import run_pipeline

    cfg = load_run_config(
        config,
        iterations=iterations,
        name=name,
        output_dir=output_dir,
        num_processes=num_processes,
        accelerate_config=accelerate_config,
        ray_address=ray_address,
    )
    run_pipeline(cfg, _quiet(console), verbose, show_scores=scores_table)
    return cfg.run_dir


@dataclass(frozen=True)
class Plan:
    """What a run would do (`polyrise run --dry-run`): the resolved config, every stage of every iteration in order
    with its status (`done`, `to run`, or `to run (after X, ...)`), and the estimated work of one iteration."""

    config: RunConfig
    stages: list[tuple[str, str]]
    work: dict[str, int]


def plan(
    config: Path | str | RunConfig,
    *,
    iterations: int | None = None,
    name: str | None = None,
    output_dir: Path | None = None,
    num_processes: int | None = None,
    accelerate_config: Path | None = None,
    ray_address: str | None = None,
) -> Plan:
    """A dry run: the inputs are checked as a run checks them, and nothing is created, locked or written."""
    from polyrise.runner import Runner

    cfg = load_run_config(
        config,
        iterations=iterations,
        name=name,
        output_dir=output_dir,
        num_processes=num_processes,
        accelerate_config=accelerate_config,
        ray_address=ray_address,
    )
    runner = Runner(cfg, _quiet(None))
    return Plan(cfg, [(stage.name, status) for stage, status in runner.plan()], runner.estimate())


def init(
    out: Path = Path("polyrise.yaml"),
    preset: str = "quickstart",
    *,
    model: str | None = None,
    languages: Sequence[str] | None = None,
    force: bool = False,
) -> Path:
    """Write a commented run config from a preset (`quickstart`, `paper`, `sandbox`) with the given model spec and
    target languages, validated before it is written; an existing file is replaced only with `force`."""
    from polyrise.presets import write_preset

    write_preset(out, preset, model, _languages(languages) if languages is not None else None, force)
    return out


def align(config: Path | str, *, verbose: bool = False, console: Console | None = None) -> Path:
    """Question alignment (`run` with `method: question-alignment`): SFT on the question pairs of the config's
    `alignment` section, evaluated before and after; returns the run directory."""
    from polyrise.config import load_config
    from polyrise.reporting import scores_table
    from polyrise.runner import run_pipeline

    cfg = load_config(config, {"method": "question-alignment"})
    run_pipeline(cfg, _quiet(console), verbose, show_scores=scores_table)
    return cfg.run_dir


# ---------------------------------------------------------------- stages on their own


def parse_shard(text: str | None) -> slice | None:
    """The requests `K/N` answers (None: all), checked before any work: every N-th from the K-th, so the shards are
    the same size and each mixes long and short requests."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip(), re.ASCII)
    if not match or int(match[1]) >= int(match[2]):
        raise PolyriseError(f"--shard {text}: expected K/N with 0 <= K < N, e.g. --shard 0/2 and --shard 1/2")
    return slice(int(match[1]), None, int(match[2]))


def _writable(out: Path) -> Path:
    """`out`, checked before any work: a file path (not a directory) whose folder exists or can be made."""
    if out.is_dir():
        raise PolyriseError(f"--out {out}: is a directory; give a file path, e.g. {out / 'out.jsonl'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PolyriseError(f"--out {out}: cannot create its folder ({e.strerror})") from None
    return out


def _check_rows(rows: Sequence[Any], path: Path) -> None:
    """Every row's language is one polyrise knows and no (id, lang) repeats (checked before a model is loaded); the
    error names the row."""
    from polyrise.io import refuse_duplicate_ids
    from polyrise.languages import LANGUAGES, get_language

    refuse_duplicate_ids(path, rows, "lang")
    for row in rows:
        if row.lang not in LANGUAGES:
            try:
                get_language(row.lang)
            except PolyriseError as e:
                raise PolyriseError(f"{path}: row {row.id!r}: {e}") from None


def _generator(model: str | EngineSettings, cache: Path | None, out: Path) -> tuple[Generator, Path]:
    """The model's engine (a spec: the hf engine) with its cache (default: `generations.sqlite` beside `out`)."""
    from polyrise.generation import Generator, open_engine
    from polyrise.generation.cache import GenerationCache
    from polyrise.settings import EngineSettings

    settings = model if isinstance(model, EngineSettings) else EngineSettings(model=model)
    cache = cache or out.parent / "generations.sqlite"
    existing = GenerationCache(cache) if cache.exists() else None  # a file that is no cache fails before the model
    engine = open_engine(settings)  # (an empty cache is falsy: `or` would open it twice)
    return Generator(engine, existing if existing is not None else GenerationCache(cache)), cache


@dataclass(frozen=True)
class Generated:
    """What `generate` or `translate` did: `written` rows in `out` (None for a shard, which fills only the cache),
    the requests `generated` now and those found `cached`, and the translations that `failed`."""

    out: Path
    cache: Path
    written: int | None
    generated: int
    cached: int
    failed: int = 0


def generate(
    prompts: Path,
    out: Path = Path("responses.jsonl"),
    *,
    model: str | EngineSettings = DEFAULT_MODEL,
    sampling: SamplingSettings | None = None,
    cache: Path | None = None,
    shard: str | None = None,
) -> Generated:
    """Answer every prompt of a JSONL file (`id`, `lang`, `instruction`) in its own language into `out`.

    `model` is a spec (answered by the hf engine) or an `EngineSettings` (any engine); `cache` a SQLite generation
    cache, by default beside `out`. `shard="K/N"` answers only every N-th prompt from the K-th into the cache and
    writes no `out`: N such calls (processes) can share one cache, and a call without `shard` then writes `out` from
    it. `out`, the shard and the rows' languages are checked before a model loads."""
    from polyrise.generation import answer_prompts
    from polyrise.io import read_jsonl, write_jsonl
    from polyrise.records import Prompt
    from polyrise.settings import SamplingSettings

    part = parse_shard(shard)
    out = _writable(out)
    rows = read_jsonl(prompts, Prompt)
    _check_rows(rows, prompts)
    generator, cache = _generator(model, cache, out)
    answers = answer_prompts(generator, rows[part] if part else rows, sampling or SamplingSettings())
    written = None if part else write_jsonl(out, answers)
    return Generated(out, cache, written, generator.stats["generated"], generator.stats["cached"])


def translation_jobs(rows: Sequence[TextToTranslate], targets: Sequence[str], path: Path) -> list[TranslationJob]:
    """One job per row (a prompt's `instruction` or a response's `output`) and target language other than the row's
    own, in row order; a row with neither text is an error naming `path` and the row."""
    from polyrise.self_translation import TranslationJob

    jobs: list[TranslationJob] = []
    for row in rows:
        kind: Literal["prompt", "response"] = "prompt" if row.instruction is not None else "response"
        text = row.instruction if row.instruction is not None else row.output
        if text is None:
            raise PolyriseError(f"{path}: row {row.id!r} has neither `instruction` nor `output`")
        jobs.extend(TranslationJob(row.id, kind, row.lang, lang, text) for lang in targets if lang != row.lang)
    return jobs


def translate(
    inputs: Path,
    to: Sequence[str],
    out: Path = Path("translations.jsonl"),
    *,
    model: str | EngineSettings = DEFAULT_MODEL,
    max_new_tokens: int = 256,
    cache: Path | None = None,
    shard: str | None = None,
) -> Generated:
    """Self-translate prompts (`instruction`) or responses (`output`) of a JSONL file into the languages `to`; a
    failed translation is written with output null. `model`, `cache` and `shard` as in `generate`."""
    from polyrise.io import read_jsonl, write_jsonl
    from polyrise.records import TextToTranslate
    from polyrise.self_translation import translate as run_translate
    from polyrise.settings import SamplingSettings

    targets = _languages(to)
    part = parse_shard(shard)
    out = _writable(out)
    rows = read_jsonl(inputs, TextToTranslate)
    _check_rows(rows, inputs)
    jobs = translation_jobs(rows, targets, inputs)
    generator, cache = _generator(model, cache, out)
    sampling = from_options(SamplingSettings, max_new_tokens=max_new_tokens)
    results = run_translate(generator, jobs[part] if part else jobs, sampling)
    written = None if part else write_jsonl(out, results)
    failed = sum(r.output is None for r in results)
    return Generated(out, cache, written, generator.stats["generated"], generator.stats["cached"], failed)


def pairs(
    prompts: Path,
    responses: Path,
    translations: Path,
    languages: Sequence[str] | None = None,
    *,
    source_lang: str | None = None,
    config: Path | None = None,
    out: Path = Path("pairs.jsonl"),
) -> dict[str, int]:
    """Build language-imbalance preference pairs in both directions from prompts, responses and cross-translations
    (JSONL files), as a run's pairs stage does: with `config`, that run's filters, language judgements and
    translation-task ids (`languages`, `source_lang` replace the config's). Writes `out`, `<out>_dropped.jsonl` (each
    dropped candidate with its reason), `<out>_stats.json` and `<out>_reward.jsonl`; returns the counts."""
    from polyrise.config import RunConfig, load_config
    from polyrise.methods.language_imbalance import (
        FilterSettings,
        LanguageImbalance,
        read_translation_task_ids,
        write_pairs,
    )

    cfg = load_config(config) if config else RunConfig()
    if cfg.method != LanguageImbalance.name:
        raise PolyriseError(f"{config}: polyrise pairs builds language-imbalance pairs, not {cfg.method}'s")
    given = {"languages": _languages(languages) if languages else None, "source_lang": source_lang}
    cfg = RunConfig.model_validate(cfg.model_dump() | {k: v for k, v in given.items() if v is not None})
    out = _writable(out)
    filters = cfg.section("filters", FilterSettings)
    task_ids = read_translation_task_ids(filters.translation_task_ids) if filters.translation_task_ids else frozenset()
    dropped, stats, reward = (
        out.with_name(f"{out.stem}_{part}") for part in ("dropped.jsonl", "stats.json", "reward.jsonl")
    )
    inputs = (prompts, responses, translations, None)
    return write_pairs(cfg, filters, task_ids, inputs=inputs, outputs=(out, dropped, stats, reward))


def _validated(section: BaseModel, overrides: Mapping[str, object], name: str) -> Any:
    """`section` with the given (non-None) values, validated by the section's own pydantic model; an error names the
    option."""
    from pydantic import ValidationError

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return type(section).model_validate(section.model_dump() | given)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        option = "--" + {"spec": "model"}.get(key, key).replace("_", "-")
        raise PolyriseError(f"{option} ({name}.{key}): {err['msg']}") from None


def train(
    data: Path,
    *,
    model: str | None = None,
    out: Path = Path("model"),
    config: Path | None = None,
    seed: int | None = None,
    dtype: str | None = None,
    chat_template: Path | None = None,
    trust_remote_code: bool | None = None,
    num_processes: int | None = None,
    accelerate_config: Path | None = None,
    machine_rank: int | None = None,
    cache: Path | None = None,
    force: bool = False,
    launched: bool = False,
) -> dict[str, Any] | None:
    """Train M(t+1) from an iteration's training data with the config's method (DPO + NLL against the given model;
    SFT for question alignment), as a run's training stage does; returns the training metrics, or None where this
    process is not the one that reports them.

    The config's `model` and `training` sections (and `seed`) are used, the given values replacing theirs and
    validated by the same models. An existing non-empty `out` is replaced only with `force`, and never when it is
    (or is inside) the input model's directory. With several processes (`num_processes`, an accelerate config,
    `machine_rank`) this relaunches `polyrise train` under `accelerate launch` (its workers get `launched`) and
    returns None."""
    from polyrise.config import RunConfig, load_config
    from polyrise.io import read_jsonl, writing_into
    from polyrise.methods import load_method
    from polyrise.models import resolve_model
    from polyrise.training.launch import launch_command, run_launched, should_launch

    cfg = load_config(config) if config else RunConfig()
    template = chat_template.read_text(encoding="utf-8") if chat_template else None
    model_overrides = {"spec": model, "dtype": dtype, "chat_template": template, "trust_remote_code": trust_remote_code}
    train_overrides = {"num_processes": num_processes, "accelerate_config": accelerate_config}
    model_settings = _validated(cfg.model, model_overrides, "model")
    training = _validated(cfg.training, train_overrides, "training")
    run_seed = cfg.seed if seed is None else _seed(seed)
    base = resolve_model(model_settings.spec)  # before the workers start: they must not all convert the model at once
    if not launched:  # the workers' parent checked `out` before it made them
        target = out.expanduser().resolve()
        for source in (base, base.base):
            if source is not None and source.is_local and target.is_relative_to(Path(source.path).resolve()):
                raise PolyriseError(f"--out {out}: is the input model {source.spec!r} (or inside it); choose another")
        if target.exists() and not target.is_dir():
            raise PolyriseError(f"--out {out}: exists and is not a directory")
        if target.is_dir() and any(target.iterdir()) and not force:
            raise PolyriseError(f"--out {out}: exists and is not empty; pass --force to replace the model there")
    method = load_method(cfg.method)
    rows = read_jsonl(data, method.record)
    # a machine rank without a multi-machine accelerate config is launch_command's error, not a silent local run
    relaunch = machine_rank is not None or should_launch(training.num_processes, training.accelerate_config)
    if relaunch and not launched:
        # the workers rerun this command; --launched keeps them from relaunching
        worker = ["polyrise.cli", "train", str(data), "--out", str(out), "--seed", str(run_seed)]
        worker += ["--model", model_settings.spec, "--dtype", model_settings.dtype]
        worker += ["--num-processes", str(training.num_processes), "--launched"]
        worker += ["--cache", str(cache)] if cache else []
        worker += ["--force"] if force else []
        worker += ["--config", str(config)] if config else []
        worker += ["--chat-template", str(chat_template)] if chat_template else []
        worker += ["--trust-remote-code"] if model_settings.trust_remote_code else []
        worker += ["--accelerate-config", str(training.accelerate_config)] if training.accelerate_config else []
        run_launched(launch_command(training.num_processes, training.accelerate_config, machine_rank) + worker)
        return None
    with writing_into(out, "the model"):
        metrics = method.train(
            base,
            rows,
            out,
            training,
            model_settings,
            seed=run_seed,
            cache=cache or out.parent / "generations.sqlite",
            report={},
        )
    if launched:
        from accelerate import PartialState

        if not PartialState().is_main_process:
            return None
    return metrics


# ---------------------------------------------------------------- evaluation


def eval_task(settings: Mapping[str, Any], sets: Sequence[str] = ()) -> TaskSettings:
    """An evaluation task from its settings (`task` names which; the keys of a config's `evaluation:` entry) and
    `KEY=VALUE` strings (YAML values; `judge.KEY` for the judge's), validated by the task's own settings class; an
    error names the option (`--limit: ...`, `--set few_shot: ...`, `--labels: not an option of task 'mgsm'`)."""
    import yaml
    from pydantic import ValidationError

    from polyrise.evaluation import parse_task

    data: dict[str, Any] = {k: v for k, v in settings.items() if v is not None}
    task = data.get("task")
    set_keys: set[str] = set()
    for item in sets:
        key, sep, value = item.partition("=")
        *parents, leaf = key.strip().split(".")
        if not sep or not leaf:
            raise PolyriseError(f"--set {item}: expected KEY=VALUE")
        target = data
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise PolyriseError(f"--set {item}: {part} is not a section")
        target[leaf] = yaml.safe_load(value)
        set_keys.add(key.split(".")[0].strip())
    try:
        return parse_task(data)
    except PolyriseError as e:  # no or an unknown task
        raise PolyriseError(f"--task {task}: {e}") from None
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err["loc"]]
        if not loc:
            option = f"--task {task}"
        elif loc[0] in set_keys:
            option = f"--set {'.'.join(loc)}"
        else:
            option = "--judge-model" if loc[0] == "judge" else "--" + loc[0].replace("_", "-")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"not an option of task {task!r}"
        raise PolyriseError(f"{option}: {msg}") from None


def merge_scores(out_dir: Path, task: str, label: str, scores: Mapping[str, Any]) -> Path:
    """Put one model's (`label`) scores of one task into `out_dir/scores.json` ({task: {label: scores}}), keeping
    every other task's and model's there; returns the file. `evaluate` and `score` both write through it, so
    evaluating (or re-scoring) into one directory adds up, and the same task and label again replaces its entry."""
    from polyrise.io import path_component_problem, write_json

    path = out_dir / "scores.json"
    for what, name in (("task", task), ("label", label)):
        if problem := path_component_problem(name):
            raise PolyriseError(f"{what} {problem}: it names the per-sample files in {out_dir}")
    merged = _existing_scores(out_dir)
    merged.setdefault(task, {})[label] = scores
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, merged)
    return path


def _existing_scores(out_dir: Path) -> dict[str, Any]:
    """`out_dir/scores.json` ({task: {label: scores}}), or {} where there is none; one that is not such a file is one
    error naming it. `evaluate` and `score` check it before any work, so it never fails them after the work."""
    from polyrise.io import read_text

    path = out_dir / "scores.json"
    if not path.is_file():
        return {}
    try:
        merged = json.loads(read_text(path, "scores file"))
    except (ValueError, RecursionError) as e:
        raise PolyriseError(f"{path}: not a scores file (invalid JSON: {str(e)[:200]}); move it away") from None
    if not isinstance(merged, dict) or not all(isinstance(v, dict) for v in merged.values()):
        raise PolyriseError(f"{path}: not a scores file (a JSON object of {{task: {{label: scores}}}}); move it away")
    return merged


def evaluate(
    task: TaskSettings | Mapping[str, Any],
    model: str | EngineSettings = DEFAULT_MODEL,
    *,
    langs: Sequence[str] = DEFAULT_LANGS,
    out: Path = Path("eval"),
    label: str = "model",
    baseline_model: str | EngineSettings | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate a model on one task per language; returns its scores ({language or direction: metrics}), merged into
    `out/scores.json` under the task's key and `label` (`merge_scores`), the per-sample rows beside it.

    `task` is an `TaskSettings` or its settings as a mapping (`{"task": "mgsm", "limit": 8}`, see `eval_task`); `model`
    a spec (hf engine) or `EngineSettings`. With `baseline_model`, that model is evaluated first into the same
    directory as `baseline` and the model is judged head-to-head against it (the judge task)."""
    from polyrise.evaluation import evaluate_model
    from polyrise.generation import Generator, open_engine
    from polyrise.generation.cache import GenerationCache
    from polyrise.io import path_component_problem
    from polyrise.settings import EngineSettings

    if problem := path_component_problem(label):
        raise PolyriseError(f"--label {problem}: it names the model's per-sample files in {out}")
    evaluation = eval_task(task) if isinstance(task, Mapping) else task
    codes = _languages(langs)
    _seed(seed)
    _existing_scores(out)
    cache = GenerationCache(out / "generations.sqlite")

    def open_model(spec: str | EngineSettings) -> Generator:
        settings = spec if isinstance(spec, EngineSettings) else EngineSettings(model=spec)
        return Generator(open_engine(settings), cache)

    baseline = None
    if baseline_model is not None:
        evaluate_model([evaluation], open_model(baseline_model), codes, out, "baseline", seed=seed)
        baseline = (out, "baseline")
    key = evaluation.key
    scores = evaluate_model([evaluation], open_model(model), codes, out, label, seed=seed, baseline=baseline)[key]
    merge_scores(out, key, label, scores)
    return scores


def score(
    task: str,
    predictions: Path,
    *,
    languages: Sequence[str] | None = None,
    min_words: int = 5,
    min_confidence: float = 0.8,
    seed: int = 0,
    out: Path | None = None,
) -> dict[str, Any]:
    """Re-score saved outputs (JSONL rows with `id`, `lang`, `output`, and `gold` for mgsm) without a model:
    language confusion per language (`langid`), or MGSM accuracy with it (`mgsm`); returns the scores.

    `languages`: what a line may be identified as besides each row's language and English (default: polyrise's
    candidates). With `out`, the scores are merged into `out/scores.json` under the task and the file's stem
    (`merge_scores`), and langid writes each answer's verdict to `out/langid_rows.jsonl`."""
    from polyrise.evaluation.fidelity import score_outputs
    from polyrise.evaluation.math import read_predictions, score_math
    from polyrise.langid import DEFAULT_CANDIDATES, LangIdSettings

    if task not in ("langid", "mgsm"):
        raise PolyriseError(f"unknown task {task!r} for `score`; known: langid, mgsm")
    candidates = _languages(languages) if languages is not None else list(DEFAULT_CANDIDATES)
    settings = from_options(
        LangIdSettings,
        names={"candidates": "languages"},
        min_words=min_words,
        min_confidence=min_confidence,
        candidates=candidates,
    )
    _seed(seed)
    if out is not None:
        _existing_scores(out)
    if task == "langid":
        scores = score_outputs(predictions, settings, out, seed)
    else:
        scores = score_math(read_predictions(predictions), settings, seed)
    if out is not None:
        merge_scores(out, task, predictions.stem, scores)
    return scores


def harness(
    tasks: Sequence[str],
    model: str = DEFAULT_MODEL,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    out: Path = Path("harness_results.json"),
) -> dict[str, Any]:
    """Run lm-evaluation-harness tasks on a model (needs the `eval` extra; MGSM goes through `evaluate`); returns
    their results, also written to `out`."""
    from polyrise.evaluation.harness import run_harness
    from polyrise.io import write_json

    found = run_harness(model, list(tasks), limit, batch_size, device)
    results: dict[str, Any] = found.get("results", found)
    write_json(out, results)
    return results


def report(run_dir: Path) -> tuple[Path, Path]:
    """Write `report.md` and `report.html` (tables per metric and language, plots) for a run or an eval output
    directory; returns both paths."""
    from polyrise.reporting import write_report

    return write_report(run_dir)


def export(
    run_dir: Path,
    iteration: int = 0,
    *,
    out: Path | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
    force: bool = False,
) -> Dataset:
    """An iteration's pairs as a Hugging Face dataset in TRL's conversational format (what DPOTrainer/SFTTrainer
    take as is), saved to `out` (replaced only with `force`) and/or pushed to a Hub dataset repo."""
    from polyrise.exporting import export_pairs

    return export_pairs(run_dir, iteration, out, push_to_hub, private, force)


# ---------------------------------------------------------------- analysis


@dataclass(frozen=True)
class Analysis:
    """An analysis' results (as its module's `run_*`/`write_*` return them) and the files written."""

    results: Any
    paths: list[Path]


def model_labels(models: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """{label: spec} of the models to analyse: a mapping as it is, else `label=SPEC` or `SPEC` entries (label: the
    last path part); default the embedded model. A label given twice is an error."""
    if isinstance(models, Mapping):
        return dict(models)
    labels: dict[str, str] = {}
    for entry in models or [DEFAULT_MODEL]:
        label, sep, spec = entry.partition("=")
        if not (sep and label) or "/" in label:
            label, spec = Path(entry.rstrip("/")).name or entry, entry
        if label in labels:
            raise PolyriseError(f"--model: label {label!r} given twice; name the models as label=SPEC")
        labels[label] = spec
    return labels


def _prompts(langs: Sequence[str], source: str, limit: int | None) -> Any:
    from polyrise.settings import PromptSource
    from polyrise.sources import load_prompts

    return load_prompts(PromptSource(source=source, limit=limit), list(langs))


def analyze_logit_lens(
    models: Sequence[str] | Mapping[str, str] | None = None,
    *,
    langs: Sequence[str] = DEFAULT_LANGS,
    source: str = "builtin:heldout",
    limit: int | None = None,
    batch_size: int = 16,
    out: Path = Path("analysis"),
) -> Analysis:
    """Logit lens: per layer, the next-token probability on English vs prompt-language tokens, for each model
    (`model_labels`); writes logit_lens.json/md/png into `out`."""
    from polyrise.analysis.logit_lens import run_logit_lens, write_logit_lens

    labels = model_labels(models)
    results = run_logit_lens(labels, _prompts(_languages(langs), source, limit), batch_size=batch_size)
    return Analysis(results, write_logit_lens(results, out))


def analyze_similarity(
    models: Sequence[str] | Mapping[str, str] | None = None,
    *,
    langs: Sequence[str] = DEFAULT_LANGS,
    source: str = "builtin:heldout",
    limit: int | None = None,
    batch_size: int = 16,
    layer: int | None = None,
    out: Path = Path("analysis"),
) -> Analysis:
    """Similarity of aligned sentences' representations to English per layer (English is always added), a ranking
    and a PCA plot of `layer` (default: the middle); writes similarity.* into `out`."""
    from polyrise.analysis.similarity import run_similarity, write_similarity

    codes = ["en", *(code for code in _languages(langs) if code != "en")]
    labels = model_labels(models)
    results = run_similarity(labels, _prompts(codes, source, limit), batch_size=batch_size, layer=layer)
    return Analysis(results, write_similarity(results, out))


def analyze_transfer(
    inputs: Sequence[Path],
    *,
    trained: Sequence[str] | None = None,
    base: str = "M0",
    tuned: str = "M1",
    tasks: Sequence[str] | None = None,
    out: Path = Path("analysis"),
) -> Analysis:
    """Cross-lingual transfer from run dirs or scores.json files: each unseen language's gain (`base` → `tuned`)
    relative to the mean gain of the `trained` ones (default: from the runs' configs)."""
    from polyrise.analysis.transfer import load_scores, write_transfer

    scores, from_runs = load_scores(list(inputs))
    languages = _languages(trained) if trained else from_runs
    results, paths = write_transfer(scores, languages, base, tuned, out, list(tasks) if tasks else None)
    return Analysis(results, paths)


# ---------------------------------------------------------------- the sandbox


def sandbox_build(
    out: Path,
    seed: int = 0,
    *,
    english_task: int | None = None,
    clone_task: int | None = None,
    translation: int | None = None,
    epochs: float | None = None,
    align_pairs: int | None = None,
    threads: int = 1,
    console: Console | None = None,
) -> SandboxInfo:
    """Train the sandbox's M0 from scratch on an imbalanced mix (the counts default to `DataMix`'s, the epochs to
    `PretrainSettings`'), align it on `align_pairs` English preferences (the alignment's strength; default:
    `AlignSettings`'), write its data, and measure both; returns what `out/sandbox.json` holds."""
    from dataclasses import replace

    from polyrise.sandbox import AlignSettings, DataMix, PretrainSettings, build_sandbox

    knobs = {"english_task": english_task, "clone_task": clone_task, "translation": translation}
    mix = replace(DataMix(), **{k: v for k, v in knobs.items() if v is not None})
    pretrain = PretrainSettings() if epochs is None else replace(PretrainSettings(), epochs=epochs)
    align = AlignSettings() if align_pairs is None else AlignSettings(pairs=align_pairs)
    return build_sandbox(out, seed, mix=mix, train=pretrain, align=align, threads=threads, console=console)


def sandbox_study(
    out: Path,
    config: Path = Path("examples/sandbox.yaml"),
    *,
    seeds: Sequence[int] = (0, 1, 2),
    variants: Sequence[str] = ("rewarding",),
    iterations: int = 3,
    align_pairs: int | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the pipeline on one sandbox per seed (its English alignment on `align_pairs` pairs, default
    `AlignSettings`') for each variant (reusing what `out` holds); returns the summary, also written as
    out/study.md, study.json and study.png."""
    from polyrise.sandbox import run_study

    return run_study(out, config, list(seeds), list(variants), iterations, _quiet(console), align_pairs=align_pairs)
