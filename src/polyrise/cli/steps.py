"""The loop's steps on their own: `polyrise generate`, `translate`, `pairs`, `train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from polyrise import api
from polyrise.cli.options import (
    AccelerateConfig,
    ApiKeyEnv,
    BaseUrl,
    Cache,
    EngineName,
    MaxRetries,
    Model,
    NumProcesses,
    Out,
    Shard,
    Timeout,
    comma_list,
    console,
    engine_settings,
)


def _shard_done(shard: str, done: api.Generated) -> None:
    console.print(
        f"shard {shard}: {done.generated} generated into {done.cache} ({done.cached} were there); once every "
        f"shard is done, the same command without --shard writes {done.out}"
    )


def generate(
    prompts: Annotated[Path, typer.Argument(help="JSONL rows with id, lang, instruction")],
    model: Model = api.DEFAULT_MODEL,
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
    shard: Shard = None,
) -> None:
    """Answer every prompt of a JSONL file in its own language."""
    from polyrise.settings import SamplingSettings

    sampling = api.from_options(
        SamplingSettings,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        seed=seed,
    )
    settings = engine_settings(
        engine, model, batch_size, base_url, api_key_env, timeout=timeout, max_retries=max_retries
    )
    done = api.generate(prompts, out, model=settings, sampling=sampling, cache=cache, shard=shard)
    if shard is not None:
        _shard_done(shard, done)
    else:
        console.print(f"wrote {done.written} responses to {done.out} ({done.cached} from cache)")


def translate(
    inputs: Annotated[
        Path, typer.Argument(help="prompts (id, lang, instruction) or responses (id, lang, output) JSONL")
    ],
    to: Annotated[str, typer.Option(help="comma-separated target languages")],
    model: Model = api.DEFAULT_MODEL,
    out: Out = Path("translations.jsonl"),
    max_new_tokens: int = 256,
    batch_size: int = 16,
    cache: Cache = None,
    engine: EngineName = "hf",
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    timeout: Timeout = 300.0,
    max_retries: MaxRetries = 5,
    shard: Shard = None,
) -> None:
    """Self-translate prompts or responses into other languages (failures are written with output null)."""
    settings = engine_settings(
        engine, model, batch_size, base_url, api_key_env, timeout=timeout, max_retries=max_retries
    )
    done = api.translate(
        inputs, comma_list(to), out, model=settings, max_new_tokens=max_new_tokens, cache=cache, shard=shard
    )
    if shard is not None:
        _shard_done(shard, done)
    else:
        console.print(
            f"wrote {done.written} translations ({done.failed} failed, {done.cached} from cache) to {done.out}"
        )


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
    langs = comma_list(languages) if languages else None
    counts = api.pairs(prompts, responses, translations, langs, source_lang=source_lang, config=config, out=out)
    console.print(f"wrote {counts['pairs']} pairs to {out}")


def train(
    data: Annotated[Path, typer.Argument(metavar="DATA", help="training data JSONL (pairs, question pairs)")],
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
    num_processes: NumProcesses = None,
    accelerate_config: AccelerateConfig = None,
    machine_rank: Annotated[
        int | None,
        typer.Option(min=0, help="this machine's rank, with an accelerate config for several machines (0 = the main)"),
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help="SQLite cache of reference log-probs (default: generations.sqlite beside --out)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace a non-empty --out (never the input model)")] = False,
    launched: Annotated[bool, typer.Option("--launched", hidden=True, help="internal: an accelerate worker")] = False,
) -> None:
    """Train M(t+1) with the config's method (DPO + NLL on pairs; SFT on question pairs for question alignment),
    on several GPUs with --num-processes.

    The same code path as a run's training stage: the model and training settings are validated by the config's
    own models, so `--dtype bf16` fails as `training.dtype` would in a config."""
    metrics = api.train(
        data,
        model=model,
        out=out,
        config=config,
        seed=seed,
        dtype=dtype,
        chat_template=chat_template,
        trust_remote_code=trust_remote_code,
        num_processes=num_processes,
        accelerate_config=accelerate_config,
        machine_rank=machine_rank,
        cache=cache,
        force=force,
        launched=launched,
    )
    if metrics is not None:
        console.print(metrics)
        console.print(f"saved model to {out}")
