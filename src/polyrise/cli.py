"""`polyrise` command line: a thin typer layer over the Python API."""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from polyrise.console import make_console
from polyrise.errors import PolyriseError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = make_console()

Model = Annotated[str, typer.Option("--model", "-m", help="embedded:<name>, HF id, local dir or LoRA adapter dir")]
Out = Annotated[Path, typer.Option("--out", "-o", help="output file")]
Cache = Annotated[Path | None, typer.Option(help="generation cache (SQLite); default: beside --out")]


def _comma_list(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated option."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _langs(text: str) -> list[str]:
    from polyrise.languages import get_language

    codes = _comma_list(text)
    for code in codes:
        get_language(code)
    return codes


EngineName = Annotated[str, typer.Option("--engine", help="hf, vllm, or openai (then --model is the server's name)")]
BaseUrl = Annotated[
    str | None,
    typer.Option(help="openai engine: the API root, e.g. http://localhost:8000/v1; comma-separated: several servers"),
]
ApiKeyEnv = Annotated[str, typer.Option(help="openai engine: environment variable holding the API key ('' for none)")]


ShardOption = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="K/N: answer only every N-th request from the K-th (K = 0 .. N-1) into the cache and write no --out; "
        "N such runs can share one cache, and a run without --shard then writes --out from it",
    ),
]
Timeout = Annotated[float, typer.Option(min=0.001, help="openai engine: seconds per request")]
MaxRetries = Annotated[int, typer.Option(min=0, help="openai engine: retries of a failed request")]


def _shard(text: str | None) -> slice | None:
    """The requests `--shard K/N` answers, checked before any work: every N-th from the K-th, so the shards are
    the same size and each mixes long and short requests."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip(), re.ASCII)
    if not match or int(match[1]) >= int(match[2]):
        raise PolyriseError(f"--shard {text}: expected K/N with 0 <= K < N, e.g. --shard 0/2 and --shard 1/2")
    return slice(int(match[1]), None, int(match[2]))


def _shard_done(part: slice, stats: dict[str, int], cache: Path, out: Path) -> None:
    console.print(
        f"shard {part.start}/{part.step}: {stats['generated']} generated into {cache} ({stats['cached']} were "
        f"there); once every shard is done, the same command without --shard writes {out}"
    )


def _writable(out: Path) -> Path:
    """`out`, checked before any work: a file path (not a directory) whose folder exists or can be made."""
    if out.is_dir():
        raise PolyriseError(f"--out {out}: is a directory; give a file path, e.g. {out / 'out.jsonl'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PolyriseError(f"--out {out}: cannot create its folder ({e.strerror})") from None
    return out


def _known_row_langs(rows: list[Any], path: Path) -> None:
    """Every row's language is one polyrise knows (checked before a model is loaded); the error names the row."""
    from polyrise.languages import LANGUAGES, get_language

    for row in rows:
        if row.lang not in LANGUAGES:
            try:
                get_language(row.lang)
            except PolyriseError as e:
                raise PolyriseError(f"{path}: row {row.id!r}: {e}") from None


def _engine_settings(
    engine: str,
    model: str | None,
    batch_size: int,
    base_url: str | None,
    api_key_env: str,
    flag: str = "",
    timeout: float = 300.0,
    max_retries: int = 5,
):
    """EngineSettings from the command-line options `--{flag}engine`, `--{flag}model`, ... ."""
    from pydantic import ValidationError

    from polyrise.settings import EngineSettings, OpenAISettings

    try:
        if engine != "openai":
            return EngineSettings.model_validate({"engine": engine, "model": model, "batch_size": batch_size})
        urls = _comma_list(base_url or "")
        if not urls or not model:
            raise PolyriseError(
                f"--{flag}engine openai needs --{flag}{'url' if flag else 'base-url'} and --{flag}model"
            )
        server = OpenAISettings(
            base_url=urls if len(urls) > 1 else urls[0],
            model=model,
            api_key_env=api_key_env or None,
            max_concurrency=batch_size,
            timeout=timeout,
            max_retries=max_retries,
        )
        return EngineSettings(engine="openai", openai=server)
    except ValidationError as e:
        err = e.errors()[0]
        raise PolyriseError(f"--{flag}{'-'.join(map(str, err['loc'])) or 'engine'}: {err['msg']}") from None


def _generator(settings, cache: Path):
    from polyrise.generation import Generator, open_engine
    from polyrise.generation.cache import GenerationCache

    return Generator(open_engine(settings), GenerationCache(cache))


Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="show the libraries' warnings and logs (always in runs/<name>/logs/)")
]


def _run_pipeline(cfg: Any, verbose: bool) -> None:
    """`run_pipeline` for `run`/`align`: Ctrl-C prints one line naming the stage and the command that resumes,
    exit 130."""
    from polyrise.report import scores_table
    from polyrise.runner import StageInterrupted, run_pipeline

    resume = shlex.join(["polyrise", *sys.argv[1:]])
    try:
        run_pipeline(cfg, console, verbose, show_scores=scores_table)
    except StageInterrupted as e:
        print(f"{e}; to resume: {resume}", file=sys.stderr)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # before the first stage or between two
        print(f"interrupted; finished stages are kept; to resume: {resume}", file=sys.stderr)
        raise typer.Exit(130) from None


@app.command()
def run(
    config: Path,
    iterations: Annotated[int | None, typer.Option(help="override `iterations`")] = None,
    num_processes: Annotated[
        int | None,
        typer.Option(min=1, help="train on N processes (GPUs) via accelerate; default: training.num_processes"),
    ] = None,
    accelerate_config: Annotated[
        Path | None, typer.Option(help="e.g. examples/accelerate/ddp.yaml; default: training.accelerate_config")
    ] = None,
    output_dir: Annotated[Path | None, typer.Option(help="override `output_dir`")] = None,
    name: Annotated[str | None, typer.Option(help="override `name` (the run dir is output_dir/name)")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="print the resolved config, each stage as done or to run, and the work; write nothing")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Run the loop of a YAML config's method (resumes where it stopped)."""
    from polyrise.config import load_config
    from polyrise.training.launch import check_accelerate_config

    overrides = {"iterations": iterations, "output_dir": output_dir, "name": name}
    cfg = load_config(config, {k: v for k, v in overrides.items() if v is not None})
    launch = {"num_processes": num_processes, "accelerate_config": accelerate_config}
    if any(v is not None for v in launch.values()):
        cfg.training = cfg.training.model_validate(
            cfg.training.model_dump() | {k: v for k, v in launch.items() if v is not None}
        )
    if cfg.training.accelerate_config is not None:  # checked now, not when the first training stage starts
        path, machines = check_accelerate_config(cfg.training.accelerate_config)
        if machines > 1:
            raise PolyriseError(
                f"{path} trains on {machines} machines, and a run trains on this one only: train an iteration's "
                "pairs across machines with polyrise train --machine-rank K on each (see docs/running-on-gpus.md)"
            )
    if dry_run:
        _print_plan(cfg)
        return
    _run_pipeline(cfg, verbose)
    console.print(f"run directory: {cfg.run_dir}")


def _print_plan(cfg: Any) -> None:
    """`run --dry-run`: the resolved config, the runner's plan of every stage, and the work of an iteration."""
    from rich.table import Table

    from polyrise.runner import Runner

    runner = Runner(cfg, console)
    console.print(cfg.to_yaml(), markup=False, highlight=False)
    stages = Table(title=f"stages of {cfg.run_dir}")
    stages.add_column("stage")
    stages.add_column("status")
    for stage, status in runner.plan():
        stages.add_row(stage.name, status)
    console.print(stages)
    work = Table(title="estimated work per iteration")
    work.add_column("what")
    work.add_column("count", justify="right")
    for what, count in runner.estimate().items():
        work.add_row(what, str(count))
    console.print(work)


@app.command()
def init(
    out: Annotated[Path, typer.Option("--out", "-o", help="the config file to write")] = Path("polyrise.yaml"),
    preset: Annotated[
        str, typer.Option(help="quickstart (embedded model, CPU), paper (Llama-3-8B, GPUs), sandbox (docs/sandbox.md)")
    ] = "quickstart",
    model: Annotated[str | None, typer.Option("--model", "-m", help="model.spec: embedded:<name>, HF id, dir")] = None,
    languages: Annotated[str | None, typer.Option(help="target languages, comma-separated, e.g. es,de,fr")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing --out")] = False,
) -> None:
    """Write a commented run config from a preset (the example configs), with your model and languages."""
    from polyrise.presets import write_preset

    write_preset(out, preset, model, _langs(languages) if languages is not None else None, force)
    console.print(f"wrote {out}; run it with: polyrise run {out} (--dry-run first shows what it would do)")


@app.command(hidden=True)
def stage(run_dir: Path, name: str, result: Path, verbose: Verbose = False) -> None:
    """A stage process of `polyrise run` (started by the run itself): one stage, its outcome to RESULT."""
    from polyrise.runner import run_stage

    run_stage(run_dir, name, result, verbose)


@app.command()
def align(config: Path, verbose: Verbose = False) -> None:
    """Question alignment: SFT on question translation pairs of a config's `alignment` section, evaluated before
    and after on trained and unseen languages (the same as `run` with `method: question-alignment`)."""
    from polyrise.config import load_config

    cfg = load_config(config, {"method": "question-alignment"})
    _run_pipeline(cfg, verbose)
    console.print(f"run directory: {cfg.run_dir}  (report: polyrise report {cfg.run_dir})")


@app.command()
def generate(
    prompts: Annotated[Path, typer.Argument(help="JSONL rows with id, lang, instruction")],
    model: Model = "embedded:smollm2-135m-instruct",
    out: Out = Path("responses.jsonl"),
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    cache: Cache = None,
    engine: EngineName = "hf",
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    timeout: Timeout = 300.0,
    max_retries: MaxRetries = 5,
    shard: ShardOption = None,
) -> None:
    """Answer every prompt of a JSONL file in its own language."""
    from polyrise.generation import answer_prompts
    from polyrise.io import read_jsonl, write_jsonl
    from polyrise.records import Prompt
    from polyrise.settings import SamplingSettings

    part = _shard(shard)
    out = _writable(out)
    rows = read_jsonl(prompts, Prompt)
    _known_row_langs(rows, prompts)
    params = SamplingSettings(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        seed=seed,
    )
    settings = _engine_settings(
        engine, model, batch_size, base_url, api_key_env, timeout=timeout, max_retries=max_retries
    )
    cache = cache or out.parent / "generations.sqlite"
    generator = _generator(settings, cache)
    if part:
        answer_prompts(generator, rows[part], params)
        _shard_done(part, generator.stats, cache, out)
        return
    n = write_jsonl(out, answer_prompts(generator, rows, params))
    console.print(f"wrote {n} responses to {out} ({generator.stats['cached']} from cache)")


@app.command()
def translate(
    inputs: Annotated[
        Path, typer.Argument(help="prompts (id, lang, instruction) or responses (id, lang, output) JSONL")
    ],
    to: Annotated[str, typer.Option(help="comma-separated target languages")],
    model: Model = "embedded:smollm2-135m-instruct",
    out: Out = Path("translations.jsonl"),
    max_new_tokens: int = 256,
    batch_size: int = 16,
    cache: Cache = None,
    engine: EngineName = "hf",
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    timeout: Timeout = 300.0,
    max_retries: MaxRetries = 5,
    shard: ShardOption = None,
) -> None:
    """Self-translate prompts or responses into other languages (failures are written with output null)."""
    from polyrise.io import read_jsonl, write_jsonl
    from polyrise.records import TextToTranslate
    from polyrise.self_translation import TranslationJob
    from polyrise.self_translation import translate as run_translate
    from polyrise.settings import SamplingSettings

    targets = _langs(to)
    part = _shard(shard)
    out = _writable(out)
    settings = _engine_settings(
        engine, model, batch_size, base_url, api_key_env, timeout=timeout, max_retries=max_retries
    )
    rows = read_jsonl(inputs, TextToTranslate)
    _known_row_langs(rows, inputs)
    jobs: list[TranslationJob] = []
    for row in rows:
        kind: Literal["prompt", "response"] = "prompt" if row.instruction is not None else "response"
        text = row.instruction if row.instruction is not None else row.output
        if text is None:
            raise PolyriseError(f"{inputs}: row {row.id!r} has neither `instruction` nor `output`")
        jobs.extend(TranslationJob(row.id, kind, row.lang, lang, text) for lang in targets if lang != row.lang)
    cache = cache or out.parent / "generations.sqlite"
    generator = _generator(settings, cache)
    params = SamplingSettings(max_new_tokens=max_new_tokens)
    if part:
        run_translate(generator, jobs[part], params)
        _shard_done(part, generator.stats, cache, out)
        return
    results = run_translate(generator, jobs, params)
    write_jsonl(out, results)
    failed = sum(r.output is None for r in results)
    console.print(
        f"wrote {len(results)} translations ({failed} failed, {generator.stats['cached']} from cache) to {out}"
    )


@app.command()
def pairs(
    prompts: Annotated[Path, typer.Option(help="prompts JSONL (all languages)")],
    responses: Annotated[Path, typer.Option(help="responses JSONL")],
    translations: Annotated[Path, typer.Option(help="cross-translations JSONL")],
    languages: Annotated[
        str | None, typer.Option(help="comma-separated target languages (default: the config's languages)")
    ] = None,
    source_lang: Annotated[str | None, typer.Option(help="default: the config's source_lang, or en")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="a run config: its filters, langid settings, translation-task ids and seed are used"),
    ] = None,
    out: Out = Path("pairs.jsonl"),
) -> None:
    """Build preference pairs in both directions, as a language-imbalance run's pairs stage does (with `--config`,
    that run's filters and language judgements); stats go to <out>_stats.json, dropped pairs to <out>_dropped.jsonl,
    the reward's labels against gold answers to <out>_reward.jsonl."""
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
    overrides = {"languages": _langs(languages) if languages else None, "source_lang": source_lang}
    cfg = RunConfig.model_validate(cfg.model_dump() | {k: v for k, v in overrides.items() if v is not None})
    out = _writable(out)
    filters = cfg.section("filters", FilterSettings)
    task_ids = read_translation_task_ids(filters.translation_task_ids) if filters.translation_task_ids else frozenset()
    side = [out.with_name(f"{out.stem}_{part}") for part in ("dropped.jsonl", "stats.json", "reward.jsonl")]
    counts = write_pairs(cfg, filters, task_ids, inputs=(prompts, responses, translations, None), outputs=(out, *side))
    console.print(f"wrote {counts['pairs']} pairs to {out}")


@app.command()
def train(
    pairs_file: Annotated[Path, typer.Argument(metavar="PAIRS", help="pairs JSONL")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="model spec (default: the config's model.spec, or embedded)")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output model dir")] = Path("model"),
    config: Annotated[
        Path | None, typer.Option(help="YAML config whose `model` and `training` sections are used (and `seed`)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="default: the config's seed, or 0")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16 or float16 (default: model.dtype)")] = None,
    chat_template: Annotated[
        Path | None, typer.Option(help="a Jinja chat template file, for a tokenizer without one")
    ] = None,
    trust_remote_code: Annotated[bool | None, typer.Option(help="default: model.trust_remote_code")] = None,
    num_processes: Annotated[
        int | None, typer.Option(min=1, help="N processes (GPUs) via accelerate; default: training.num_processes")
    ] = None,
    accelerate_config: Annotated[
        Path | None, typer.Option(help="e.g. examples/accelerate/ddp.yaml; default: training.accelerate_config")
    ] = None,
    machine_rank: Annotated[
        int | None,
        typer.Option(min=0, help="this machine's rank, with an accelerate config for several machines (0 = the main)"),
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help="SQLite cache of reference log-probs (default: generations.sqlite beside --out)")
    ] = None,
    launched: Annotated[bool, typer.Option("--launched", hidden=True, help="internal: an accelerate worker")] = False,
) -> None:
    """Train M(t+1) from an iteration's training data with the config's method (DPO + NLL against the given model;
    SFT for question alignment), on several GPUs with --num-processes.

    The same code path as a run's training stage: the model and training settings are validated by the config's
    own models, so `--dtype bf16` fails as `training.dtype` would in a config."""
    from polyrise.config import RunConfig, load_config
    from polyrise.io import read_jsonl
    from polyrise.methods import load_method
    from polyrise.models import resolve_model
    from polyrise.training.launch import launch_command, run_launched, should_launch

    cfg = load_config(config) if config else RunConfig()
    template = chat_template.read_text(encoding="utf-8") if chat_template else None
    model_overrides = {"spec": model, "dtype": dtype, "chat_template": template, "trust_remote_code": trust_remote_code}
    train_overrides = {"num_processes": num_processes, "accelerate_config": accelerate_config}
    settings = _validated(cfg.model, model_overrides, "model"), _validated(cfg.training, train_overrides, "training")
    model_settings, training = settings
    run_seed = cfg.seed if seed is None else seed
    base = resolve_model(model_settings.spec)  # before the workers start: they must not all convert the model at once
    method = load_method(cfg.method)
    pairs = read_jsonl(pairs_file, method.record)
    # a machine rank without a multi-machine accelerate config is launch_command's error, not a silent local run
    relaunch = machine_rank is not None or should_launch(training.num_processes, training.accelerate_config)
    if relaunch and not launched:
        # the workers rerun this command; --launched keeps them from relaunching
        worker = ["polyrise.cli", "train", str(pairs_file), "--out", str(out), "--seed", str(run_seed)]
        worker += ["--model", model_settings.spec, "--dtype", model_settings.dtype]
        worker += ["--num-processes", str(training.num_processes), "--launched"]
        worker += ["--cache", str(cache)] if cache else []
        worker += ["--config", str(config)] if config else []
        worker += ["--chat-template", str(chat_template)] if chat_template else []
        worker += ["--trust-remote-code"] if model_settings.trust_remote_code else []
        worker += ["--accelerate-config", str(training.accelerate_config)] if training.accelerate_config else []
        run_launched(launch_command(training.num_processes, training.accelerate_config, machine_rank) + worker)
        return
    metrics = method.train(
        base,
        pairs,
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
            return
    console.print(metrics)
    console.print(f"saved model to {out}")


def _validated(section, overrides: Mapping[str, object], name: str):
    """`section` with the given (non-None) option values, validated by the section's own pydantic model; an error
    names the option."""
    from pydantic import ValidationError

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return type(section).model_validate(section.model_dump() | given)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        option = "--" + {"spec": "model"}.get(key, key).replace("_", "-")
        raise PolyriseError(f"{option} ({name}.{key}): {err['msg']}") from None


def _eval_task(task: str, options: dict[str, object], sets: list[str]):
    """The task of `polyrise eval` from its options (those given) and `--set KEY=VALUE` pairs (YAML values,
    `judge.KEY` for the judge's), validated by the task's own settings class; an error names the option."""
    import yaml
    from pydantic import ValidationError

    from polyrise.evaluation import parse_task

    data: dict[str, Any] = {"task": task, **{k: v for k, v in options.items() if v is not None}}
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


@app.command("eval")
def eval_(
    task: Annotated[str, typer.Option(help="mgsm, judge, choice, translation, classify or reflik")],
    model: Model = "embedded:smollm2-135m-instruct",
    source: Annotated[str | None, typer.Option(help="the task's data (mgsm default: gsm-symbolic)")] = None,
    langs: Annotated[str, typer.Option(help="comma-separated languages")] = "en,es,de,fr",
    limit: Annotated[int | None, typer.Option(help="first N items per language")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="mgsm, judge, translation: answer length; reflik: answer tokens scored")
    ] = None,
    few_shot: Annotated[int | None, typer.Option(help="mgsm, classify: demonstrations per item")] = None,
    name: Annotated[str | None, typer.Option(help="key of the scores and files (default: the task)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output dir (per-sample JSONL + scores.json)")] = Path(
        "eval"
    ),
    label: Annotated[str, typer.Option(help="name of this model in scores.json")] = "model",
    reference: Annotated[str | None, typer.Option(help="judge: alpaca_eval reference outputs ({lang})")] = None,
    baseline_model: Annotated[str | None, typer.Option(help="judge: head-to-head against this model")] = None,
    judge_model: Annotated[
        str | None, typer.Option(help="judge: a model spec, or the model name at --judge-url")
    ] = None,
    judge_engine: Annotated[
        str | None, typer.Option(help="judge: hf, vllm or openai (default: openai with --judge-url)")
    ] = None,
    judge_url: Annotated[str | None, typer.Option(help="judge: OpenAI-compatible base URL")] = None,
    judge_api_key_env: str = "OPENAI_API_KEY",
    normalize: Annotated[str | None, typer.Option(help="choice, classify: chars, tokens or none")] = None,
    labels: Annotated[str | None, typer.Option(help="classify: comma-separated labels (default: the data's)")] = None,
    constrain: Annotated[str | None, typer.Option(help="classify: loglik or generate")] = None,
    demos: Annotated[str | None, typer.Option(help="classify: demonstrations JSONL; default: the other items")] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="any task setting as KEY=VALUE (a YAML value; judge.KEY for the judge's)"),
    ] = None,
    batch_size: int = 16,
    seed: int = 0,
    engine: EngineName = "hf",
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
) -> None:
    """Evaluate a model on one task per language; merges its scores into <out>/scores.json.

    The options are the task's settings, checked by the same settings class as a run config's `evaluation:`
    entry (an option of another task is an error); `--set KEY=VALUE` gives any of them.
    """
    import json

    from polyrise.evaluation import evaluate_model
    from polyrise.generation import Generator, open_engine
    from polyrise.generation.cache import GenerationCache
    from polyrise.io import write_json
    from polyrise.report import scores_table

    options: dict[str, object] = {
        "source": source,
        "name": name,
        "limit": limit,
        "max_new_tokens": max_new_tokens,
        "few_shot": few_shot,
        "reference": reference,
        "normalize": normalize,
        "labels": _comma_list(labels) if labels is not None else None,
        "constrain": constrain,
        "demos": demos,
    }
    if judge_model or judge_url:
        judge_engine = judge_engine or ("openai" if judge_url else "hf")
        judge = _engine_settings(judge_engine, judge_model, batch_size, judge_url, judge_api_key_env, flag="judge-")
        options["judge"] = judge.model_dump()
    evaluation = _eval_task(task, options, settings or [])
    codes = _langs(langs)
    cache = GenerationCache(out / "generations.sqlite")

    def open_model(spec: str) -> Generator:
        return Generator(open_engine(_engine_settings(engine, spec, batch_size, base_url, api_key_env)), cache)

    baseline = None
    if baseline_model is not None:  # evaluated first, into the same dir, as "baseline"
        evaluate_model([evaluation], open_model(baseline_model), codes, out, "baseline", seed=seed)
        baseline = (out, "baseline")
    key = evaluation.key
    scores = evaluate_model([evaluation], open_model(model), codes, out, label, seed=seed, baseline=baseline)[key]
    path = out / "scores.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.setdefault(key, {})[label] = scores
    write_json(path, merged)
    console.print(scores_table(key, {label: scores}))
    console.print(f"per-sample rows and scores in {out}/")


@app.command()
def score(
    task: Annotated[str, typer.Argument(help="langid or mgsm")],
    predictions: Annotated[Path, typer.Argument(help="JSONL rows with id, lang, output (and gold for mgsm)")],
    languages: Annotated[
        str | None,
        typer.Option(help="comma-separated languages a line may be identified as, besides each row's and English"),
    ] = None,
    min_words: Annotated[int, typer.Option(min=0, help="words a line needs to be identified")] = 5,
    min_confidence: Annotated[float, typer.Option(min=0.0, max=1.0, help="below it a line is undecided")] = 0.8,
    seed: Annotated[int, typer.Option(help="seed of the bootstrap intervals")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write per-row verdicts and scores.json here")] = None,
) -> None:
    """Re-score saved outputs without a model: language confusion per language (langid), or MGSM accuracy with it."""
    from pydantic import ValidationError

    from polyrise.evaluation.fidelity import score_outputs
    from polyrise.evaluation.math import read_predictions, score_math
    from polyrise.io import write_json
    from polyrise.langid import DEFAULT_CANDIDATES, LangIdSettings
    from polyrise.report import scores_table

    if task not in ("langid", "mgsm"):
        raise PolyriseError(f"unknown task {task!r} for `score`; known: langid, mgsm")
    candidates = _langs(languages) if languages is not None else list(DEFAULT_CANDIDATES)
    try:
        settings = LangIdSettings(min_words=min_words, min_confidence=min_confidence, candidates=candidates)
    except ValidationError as e:
        raise PolyriseError(f"--languages: {e.errors()[0]['msg']}") from None
    if task == "langid":
        scores = score_outputs(predictions, settings, out, seed)
    else:
        scores = score_math(read_predictions(predictions), settings, seed)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "scores.json", {"mgsm": {predictions.stem: scores}})
    console.print(scores_table(task, {predictions.stem: scores}))
    if out is not None:
        console.print(f"scores in {out}/scores.json")


@app.command()
def harness(
    tasks: Annotated[str, typer.Option(help="comma-separated lm-evaluation-harness task names, e.g. xnli_en,xcopa_it")],
    model: Model = "embedded:smollm2-135m-instruct",
    limit: Annotated[int | None, typer.Option(help="first N examples per task")] = None,
    batch_size: int = 8,
    device: str = "cpu",
    out: Annotated[Path, typer.Option("--out", "-o", help="results JSON")] = Path("harness_results.json"),
) -> None:
    """Run lm-evaluation-harness tasks on a model (needs the `eval` extra; MGSM goes through `polyrise eval`)."""
    from polyrise.evaluation.harness import run_harness
    from polyrise.io import write_json

    results = run_harness(model, _comma_list(tasks), limit, batch_size, device)
    write_json(out, results.get("results", results))
    console.print(results.get("results", results))


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory (or an eval --out dir)")]) -> None:
    """Write report.md and report.html (tables per metric and language, plots) for a run."""
    from polyrise.report import write_report

    md, page = write_report(run_dir)
    console.print(f"wrote {md} and {page}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    iteration: Annotated[int, typer.Option(min=0, help="whose pairs: iter_N/pairs.jsonl or question_pairs.jsonl")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="save_to_disk into this directory")] = None,
    push_to_hub: Annotated[
        str | None, typer.Option(help="push to this Hub dataset repo (token: HF_TOKEN or `hf auth login`)")
    ] = None,
    private: Annotated[bool, typer.Option(help="with --push-to-hub: a private repo")] = False,
    force: Annotated[bool, typer.Option(help="replace an existing --out")] = False,
) -> None:
    """Export an iteration's pairs as a Hugging Face dataset in TRL's format (DPOTrainer/SFTTrainer take it as is)."""
    from polyrise.export import export_pairs

    dataset = export_pairs(run_dir, iteration, out, push_to_hub, private, force)
    console.print(f"{dataset.num_rows} rows, columns {', '.join(dataset.column_names)}")
    if out is not None:
        console.print(f"saved to {out} (datasets.load_from_disk)")
    if push_to_hub is not None:
        console.print(f"pushed to https://huggingface.co/datasets/{push_to_hub}")


@app.command()
def models(
    spec: Annotated[str, typer.Argument(help="model spec")] = "embedded:smollm2-135m-instruct",
) -> None:
    """Resolve a model spec (converting the embedded model once) and print where it lives."""
    from polyrise.models import resolve_model

    resolved = resolve_model(spec)
    console.print(f"{spec} → {resolved.path}" + (f" (adapter on {resolved.base.spec})" if resolved.base else ""))
    console.print(f"fingerprint: {resolved.fingerprint()}")


analyze_app = typer.Typer(
    no_args_is_help=True, help="Look inside models: logit lens, representation similarity, transfer."
)
app.add_typer(analyze_app, name="analyze")

AnalysisModels = Annotated[
    list[str] | None,
    typer.Option(
        "--model", "-m", help="label=SPEC or SPEC (label: its last path part); repeat to compare (before=… after=…)"
    ),
]
AnalysisLangs = Annotated[str, typer.Option(help="comma-separated languages")]
AnalysisSource = Annotated[str, typer.Option(help="prompts: builtin:<name>, a JSONL path with {lang}, hf:<dataset>")]
AnalysisLimit = Annotated[int | None, typer.Option(min=1, help="first N prompt ids per language")]
AnalysisBatch = Annotated[int, typer.Option(min=1)]
AnalysisOut = Annotated[Path, typer.Option("--out", "-o", help="output dir")]


def _analysis_inputs(entries: list[str] | None, langs: list[str], source: str, limit: int | None):
    """({label: spec} from `label=SPEC` or `SPEC` entries, the prompts): both checked before any model loads."""
    from polyrise.settings import PromptSource
    from polyrise.sources import load_prompts

    models: dict[str, str] = {}
    for entry in entries or ["embedded:smollm2-135m-instruct"]:
        label, sep, spec = entry.partition("=")
        if not (sep and label) or "/" in label:
            label, spec = Path(entry.rstrip("/")).name or entry, entry
        if label in models:
            raise PolyriseError(f"--model: label {label!r} given twice; name the models as label=SPEC")
        models[label] = spec
    return models, load_prompts(PromptSource(source=source, limit=limit), langs)


def _print_analysis(title: str, columns: list[str], rows: list[list[str]], paths: list[Path]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"wrote {', '.join(str(p) for p in paths)}")


@analyze_app.command("logit-lens")
def analyze_logit_lens(
    model: AnalysisModels = None,
    langs: AnalysisLangs = "en,es,de,fr",
    source: AnalysisSource = "builtin:heldout",
    limit: AnalysisLimit = None,
    batch_size: AnalysisBatch = 16,
    out: AnalysisOut = Path("analysis"),
) -> None:
    """Logit lens: per layer, next-token probability on English vs prompt-language tokens (logit_lens.json/md/png)."""
    from polyrise.analysis.logit_lens import lens_table, run_logit_lens, write_logit_lens

    models, prompts = _analysis_inputs(model, _langs(langs), source, limit)
    results = run_logit_lens(models, prompts, batch_size=batch_size)
    _print_analysis("logit lens", *lens_table(results), write_logit_lens(results, out))


@analyze_app.command("similarity")
def analyze_similarity(
    model: AnalysisModels = None,
    langs: Annotated[str, typer.Option(help="comma-separated languages (English is always added)")] = "en,es,de,fr",
    source: AnalysisSource = "builtin:heldout",
    limit: AnalysisLimit = None,
    batch_size: AnalysisBatch = 16,
    layer: Annotated[int | None, typer.Option(help="layer of the PCA plot (0 = embeddings; default: middle)")] = None,
    out: AnalysisOut = Path("analysis"),
) -> None:
    """Similarity of aligned sentences' representations to English per layer, ranking + PCA (similarity.*)."""
    from polyrise.analysis.similarity import run_similarity, similarity_table, write_similarity

    codes = ["en", *(code for code in _langs(langs) if code != "en")]
    models, prompts = _analysis_inputs(model, codes, source, limit)
    results = run_similarity(models, prompts, batch_size=batch_size, layer=layer)
    _print_analysis("similarity to English", *similarity_table(results), write_similarity(results, out))


@analyze_app.command("transfer")
def analyze_transfer(
    inputs: Annotated[list[Path], typer.Argument(metavar="RUN_OR_SCORES...", help="run dirs or scores.json files")],
    trained: Annotated[
        str | None, typer.Option(help="comma-separated trained languages (default: from the run's config)")
    ] = None,
    base: Annotated[str, typer.Option(help="label of the model before training")] = "M0",
    tuned: Annotated[str, typer.Option(help="label of the model after training")] = "M1",
    task: Annotated[list[str] | None, typer.Option(help="only these tasks (repeatable)")] = None,
    out: AnalysisOut = Path("analysis"),
) -> None:
    """Cross-lingual transfer: each unseen language's gain relative to the mean gain of the trained ones."""
    from polyrise.analysis.transfer import load_scores, write_transfer

    scores, from_runs = load_scores(inputs)
    results, paths = write_transfer(scores, _langs(trained) if trained else from_runs, base, tuned, out, task)
    rows = [
        [
            name,
            metric,
            lang + (" *" if r["trained"] else ""),
            f"{r['gain']:+.3f}",
            "-" if r["transfer"] is None else f"{r['transfer']:.2f}",
        ]
        for name, by_metric in results.items()
        for metric, by_lang in by_metric.items()
        for lang, r in by_lang.items()
    ]
    columns = ["task", "metric", "lang", "gain", "transfer"]
    _print_analysis(f"transfer {base} → {tuned} (* trained)", columns, rows, paths)


sandbox_app = typer.Typer(
    no_args_is_help=True, help="The cloned-language sandbox: a tiny model with a known language imbalance."
)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("build")
def sandbox_build(
    out: Annotated[Path, typer.Option("--out", "-o", help="output dir (model/, prompts/, eval/, sandbox.json)")],
    seed: int = 0,
    english_task: Annotated[int | None, typer.Option(help="English task examples (default: DataMix)")] = None,
    clone_task: Annotated[int | None, typer.Option(help="task examples per clone")] = None,
    translation: Annotated[int | None, typer.Option(help="translation examples per clone and direction")] = None,
    epochs: Annotated[float | None, typer.Option(help="training epochs (default: PretrainSettings)")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads (part of a build's reproducibility)")] = 1,
) -> None:
    """Train the sandbox's M0 from scratch on an imbalanced mix, write its data, and print its M0 numbers."""
    from dataclasses import replace

    from polyrise.sandbox import DataMix, PretrainSettings, build_sandbox, summary_table

    knobs = {"english_task": english_task, "clone_task": clone_task, "translation": translation}
    mix = replace(DataMix(), **{k: v for k, v in knobs.items() if v is not None})
    train = PretrainSettings() if epochs is None else replace(PretrainSettings(), epochs=epochs)
    info = build_sandbox(out, seed, mix=mix, train=train, threads=threads, console=console)
    title = "M0: task accuracy (greedy, final integer exact) and self-translation exact match (q: questions only)"
    _print_analysis(title, *summary_table(info), [out / "sandbox.json", info.model_dir, info.aligned_dir])
    took = info.seconds
    console.print(
        f"built in {took['total']:.0f} s (training {took['train']:.0f} s, English alignment {took['align']:.0f} s)"
    )


@sandbox_app.command("study")
def sandbox_study(
    out: Annotated[Path, typer.Option("--out", "-o", help="study dir (sandbox-seed<S>/, runs/, study.md)")],
    config: Annotated[Path, typer.Option(help="base run config")] = Path("examples/sandbox.yaml"),
    seeds: Annotated[str, typer.Option(help="comma-separated sandbox seeds")] = "0,1,2",
    variants: Annotated[
        str,
        typer.Option(
            help="comma-separated: rewarding, swapped, nll0, no-filters (LIDR and its controls); icr, "
            "icr-no-length-control, icr-native-instruction (Implicit Cross-Lingual Rewarding and its ablations)"
        ),
    ] = "rewarding",
    iterations: Annotated[int, typer.Option(min=1)] = 3,
) -> None:
    """Run the pipeline on one sandbox per seed for each variant; print MGSM accuracy as mean ± sd over seeds.

    Reruns add to the same study dir (e.g. controls with fewer iterations); the summary covers every run in it.
    """
    from polyrise.sandbox import run_study

    try:
        seed_list = [int(s) for s in _comma_list(seeds)]
    except ValueError:
        raise PolyriseError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    run_study(out, config, seed_list, _comma_list(variants), iterations, console)
    console.print((out / "study.md").read_text())
    console.print(f"written: {out / 'study.md'}, {out / 'study.json'}, {out / 'study.png'}")


def main() -> None:
    """Entry point: user errors print one clear message and exit 1; Ctrl-C exits 130 (requests in flight are not
    waited for: what finished is in the cache); any other exception is a bug: one line naming it and the log that
    holds its traceback (`POLYRISE_TRACEBACK=1` raises it instead)."""
    try:
        app()
    except PolyriseError as e:
        print(f"error: {e}", file=sys.stderr)  # plain: no wrapping or markup inside paths
        raise SystemExit(1) from None
    except SystemExit as e:  # typer turns Ctrl-C into exit 130; `run` has said where it stopped
        if e.code == 130 and isinstance(getattr(e.__context__, "__cause__", None), KeyboardInterrupt):
            print("interrupted; rerun the same command to resume (finished work is kept)", file=sys.stderr)
        raise
    except Exception as e:
        if os.environ.get("POLYRISE_TRACEBACK"):
            raise
        log = _crash_log()
        print(
            f"error: unexpected {type(e).__name__}: {str(e)[:300]} (a bug in polyrise, not in your input: the "
            f"traceback is in {log}; please attach it to a bug report)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


def _crash_log() -> Path:
    """Write the current exception's traceback to a log file; return its path."""
    import tempfile
    import time
    import traceback

    folder = Path(tempfile.gettempdir()) / "polyrise-logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(f"polyrise {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path


if __name__ == "__main__":
    main()
