"""What the subcommands share: the console they print to, option types, and the parsers of option values."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from polyrise import api
from polyrise.console import make_console
from polyrise.errors import PolyriseError

if TYPE_CHECKING:
    from polyrise.settings import EngineSettings

console = make_console()

Model = Annotated[str, typer.Option("--model", "-m", help="embedded:<name>, HF id, local dir or LoRA adapter dir")]
Out = Annotated[Path, typer.Option("--out", "-o", help="output file")]
Cache = Annotated[Path | None, typer.Option(help="generation cache (SQLite); default: beside --out")]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="show the libraries' warnings and logs (always in runs/<name>/logs/)")
]
EngineName = Annotated[str, typer.Option("--engine", help="hf, vllm, or openai (then --model is the server's name)")]
BaseUrl = Annotated[
    str | None,
    typer.Option(help="openai engine: the API root, e.g. http://localhost:8000/v1; comma-separated: several servers"),
]
ApiKeyEnv = Annotated[str, typer.Option(help="openai engine: environment variable holding the API key ('' for none)")]
Timeout = Annotated[float, typer.Option(min=0.001, help="openai engine: seconds per request")]
MaxRetries = Annotated[int, typer.Option(min=0, help="openai engine: retries of a failed request")]
Shard = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="K/N: answer only every N-th request from the K-th (K = 0 .. N-1) into the cache and write no --out; "
        "N such runs can share one cache, and a run without --shard then writes --out from it",
    ),
]
NumProcesses = Annotated[
    int | None, typer.Option(min=1, help="N processes (GPUs) via accelerate; default: training.num_processes")
]
AccelerateConfig = Annotated[
    Path | None, typer.Option(help="e.g. examples/accelerate/ddp.yaml; default: training.accelerate_config")
]


def comma_list(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated option."""
    return [item.strip() for item in text.split(",") if item.strip()]


def engine_settings(
    engine: str,
    model: str | None,
    batch_size: int,
    base_url: str | None,
    api_key_env: str,
    flag: str = "",
    timeout: float = 300.0,
    max_retries: int = 5,
) -> EngineSettings:
    """EngineSettings from the options `--{flag}engine`, `--{flag}model`, ...; an error names the option."""
    from polyrise.settings import EngineSettings, OpenAISettings

    if engine != "openai":
        return api.from_options(EngineSettings, flag, engine=engine, model=model, batch_size=batch_size)
    urls = comma_list(base_url or "")
    if not urls or not model:
        raise PolyriseError(f"--{flag}engine openai needs --{flag}{'url' if flag else 'base-url'} and --{flag}model")
    server = api.from_options(
        OpenAISettings,
        flag,
        base_url=urls if len(urls) > 1 else urls[0],
        model=model,
        api_key_env=api_key_env or None,
        max_concurrency=batch_size,
        timeout=timeout,
        max_retries=max_retries,
    )
    return EngineSettings(engine="openai", openai=server)


def print_table(title: str, columns: list[str], rows: list[list[str]], paths: list[Path]) -> None:
    """A right-aligned table of results, then the files written."""
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"wrote {', '.join(str(p) for p in paths)}")
