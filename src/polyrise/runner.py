"""The generic loop M0 → M1 → …: declared stages, the manifest that skips finished ones, stage processes and
engines. It knows no method: a method (`polyrise.methods`) supplies each iteration's data and training stages;
the runner adds the held-out answers and the evaluations, once per model."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import hashlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.table import Table

from polyrise.config import RunConfig, load_config
from polyrise.console import library_output, make_console
from polyrise.context import Stage
from polyrise.errors import PolyriseError
from polyrise.evaluation import evaluate_model
from polyrise.evaluation.fidelity import off_target_rates
from polyrise.generation import Engine, Generator, answer_prompts, new_stats, open_engine
from polyrise.generation.cache import GenerationCache
from polyrise.io import (
    atomic_open,
    file_hash,
    iter_rows,
    lang_paths,
    read_jsonl,
    write_json,
    write_jsonl,
    writing_into,
)
from polyrise.layout import EVAL_STAGE, HELDOUT_STAGE, RunLayout
from polyrise.methods import Method, load_method
from polyrise.models import resolve_model
from polyrise.records import Prompt, Response
from polyrise.settings import SamplingSettings
from polyrise.sources import load_prompts, source_files
from polyrise.tracking import Tracker, flatten, trainer_reporting
from polyrise.tracking import check as check_tracking
from polyrise.training.launch import LAUNCH_FIELDS, die_with_parent, launch_command, should_launch
from polyrise.versions import library_versions

__all__ = ["Manifest", "RunLock", "Runner", "Stage", "StageInterrupted", "run_pipeline", "run_stage"]


class StageInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a stage; its message names the stage and its iteration (the CLI adds the command
    that resumes). The manifest never records the interrupted stage, so the rerun repeats it (from the generation
    cache)."""

    def __init__(self, stage: str) -> None:
        iteration = stage.split("/")[0].removeprefix("iter_")
        super().__init__(f"interrupted during stage {stage} (iteration {iteration}); finished stages are kept")


class Manifest:
    """`manifest.json`: per stage its status, input hash, outputs and their hashes, counts, seconds and the library
    versions it ran with.

    It only records what finished, so a manifest that cannot be read is an error naming it, with the advice to
    delete it to redo the run; it is not moved aside to redo every stage unasked, which would throw away finished
    training without a word (the generation cache makes a redo's generation cheap, not its training)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stages: dict[str, dict[str, Any]] = self._read() if path.exists() else {}

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_bytes().decode("utf-8"))
        except OSError as e:
            problem = e.strerror
        except UnicodeDecodeError:
            problem = "not valid UTF-8"
        except json.JSONDecodeError as e:
            problem = f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        else:
            stages = data.get("stages") if isinstance(data, dict) else None
            if isinstance(stages, dict) and all(isinstance(v, dict) for v in stages.values()):
                return stages
            problem = 'not {"stages": {name: entry}}'
        raise PolyriseError(
            f"{self.path}: cannot read this run's manifest ({problem}). It records which stages finished; "
            "delete it to redo the run (generations are kept in the cache)"
        )

    def is_done(self, key: str, input_hash: str, outputs: Sequence[Path]) -> bool:
        """Finished from the same inputs, and every output still what it was when the stage finished."""
        entry = self.stages.get(key, {})
        if entry.get("status") != "done" or entry.get("input_hash") != input_hash:
            return False
        recorded = entry.get("output_hashes")
        if recorded is None:  # recorded before outputs were hashed: all it can tell is that they existed
            return all(p.exists() for p in outputs)
        return recorded == [output_hash(p) for p in outputs]

    def record(self, key: str, entry: dict[str, Any]) -> None:
        self.stages[key] = entry
        write_json(self.path, {"stages": self.stages})


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _content_hash(path: Path) -> str:
    if path.is_file():
        return file_hash(path)
    return resolve_model(str(path)).fingerprint() if path.is_dir() else "missing"


def output_hash(path: Path) -> str:
    """What a stage's output holds, to tell a damaged one: a file's sha256; a directory's (a model's) file names
    and sizes, a stat per file, since hashing its weights on every skip would cost seconds per GB; `missing`.
    Hidden files are left out, as in the model fingerprint."""
    if path.is_file():
        return file_hash(path)
    if not path.is_dir():
        return "missing"
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        relative = f.relative_to(path)
        if f.is_file() and not any(part.startswith(".") for part in relative.parts):
            h.update(f"{relative}\0{f.stat().st_size}\n".encode())
    return f"dir:{h.hexdigest()}"


class RunLock:
    """An exclusive `flock` on `<run dir>/.run.lock`, which holds the owner's PID, so one run at a time uses a run
    dir. The kernel drops the lock when the process ends (kill -9 included): a killed run never blocks its rerun
    and there is no stale lock to clean. fcntl directly, not the `filelock` package: its acquire opens the lock
    file with O_TRUNC, so every refused run would erase the PID that the message names."""

    def __init__(self, layout: RunLayout) -> None:
        self.run_dir = layout.root
        self.path = layout.lock
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock (a no-op when held), or raise naming the PID that holds it."""
        if self._file is not None:
            return
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC  # not truncated before it is ours
        try:
            fh = os.fdopen(os.open(self.path, flags, 0o666), "a+", encoding="utf-8")
        except OSError as e:
            why = f"cannot open ({e.strerror})"
            if e.errno == errno.ELOOP:  # the lock file is truncated once taken: never through a link to elsewhere
                why = "is a symbolic link; polyrise does not follow it (remove it)"
            raise PolyriseError(f"{self.path}: {why}") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fh)
            fh.close()
            raise PolyriseError(
                f"{self.run_dir} is in use by PID {holder} (another polyrise run); wait for it or stop it"
            ) from None
        except OSError as e:
            fh.close()
            raise PolyriseError(f"{self.path}: cannot lock the run directory ({e.strerror})") from None
        try:
            with writing_into(self.path, "the run's lock file"):
                fh.seek(0)
                fh.truncate()
                fh.write(f"{os.getpid()}\n")
                fh.flush()
        except PolyriseError:
            with contextlib.suppress(OSError):  # closing flushes the bytes that did not fit again
                fh.close()
            raise
        self._file = fh

    @staticmethod
    def _holder(fh: IO[str]) -> str:
        """The PID written by the holder (which writes it just after it takes the lock)."""
        for _ in range(40):
            fh.seek(0)
            text = fh.read().strip()
            if text.isdigit():
                return text
            time.sleep(0.05)
        return "unknown"

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the lock
            self._file = None


@dataclass
class Runner:
    """Runs one config's iterations. Building one checks the inputs and writes nothing; `with runner:` (or `run()`)
    creates the run dir and holds its lock. The parent only orchestrates: with `stage_processes`, every stage that
    loads a model runs in its own process (`polyrise.cli stage`), so GPU and host memory are returned between
    stages."""

    config: RunConfig
    console: Console = field(default_factory=make_console)
    child: bool = False
    """True inside a stage process: bodies run here, the lock and the manifest are the parent's."""
    verbose: bool = False
    """Show the libraries' warnings, logs and progress bars on the console too, not only in the stage logs."""
    show_scores: Callable[[str, dict[str, Any]], RenderableType] | None = None
    """The console table of one task's scores by model, printed after each iteration (the report's)."""
    timings: list[tuple[str, float, str]] = field(default_factory=list)
    _engine_key: str | None = None
    _generator: Generator | None = None
    _cache: GenerationCache | None = None
    generation_stats: dict[str, int] = field(default_factory=new_stats)
    """The counters of every policy and translator generator this runner loads (`Generator.stats`)."""
    tracker: Tracker | None = None
    """polyrise's per-iteration metrics go here during `run()` when `tracking.backend` is set."""

    def __post_init__(self) -> None:
        self.layout: RunLayout = self.config.layout
        self.run_dir = self.layout.root
        self.method: Method = load_method(self.config.method)(self)
        self.manifest = Manifest(self.layout.manifest)
        self._lock = RunLock(self.layout)
        resolve_model(self.config.model.spec)  # fail on a missing model before anything is written
        if not self.child:
            self._check_inputs()

    def __enter__(self) -> Runner:
        """Create the run dir and take its lock (a stage process: its parent holds it), open the cache, clean a
        killed run's unfinished writes and write the resolved config the stage processes rebuild the run from."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PolyriseError(f"{self.run_dir}: cannot create the run directory ({e.strerror})") from None
        if self.child:
            self._cache = GenerationCache(self.layout.cache)
            return self
        self._lock.acquire()  # before anything of this run is written: another run may be using the dir
        try:
            self._cache = GenerationCache(self.layout.cache)
            for orphan in self.run_dir.rglob(".*.tmp"):  # a killed run's unfinished atomic writes
                if orphan.is_file():
                    orphan.unlink()
            with atomic_open(self.layout.config) as fh:
                fh.write(self.config.to_yaml())
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cache(self) -> GenerationCache:
        if self._cache is None:
            raise RuntimeError("the run is not open: use `with runner:` (or runner.run())")
        return self._cache

    def _check_inputs(self) -> None:
        """Fail before anything is written on what can be checked without running a stage: every model spec
        resolves, the method's prompt sources, the held-out set and the evaluations' local data files load (the
        method's config checks ran when the config was loaded). A run that cannot start leaves its run dir as it was."""
        cfg = self.config
        translator = cfg.generation.translator
        judges = [j.model for task in cfg.evaluation if (j := getattr(task, "judge", None)) and j.model]
        for spec in [*([translator.model] if translator and translator.model else []), *judges]:
            resolve_model(spec)
        for task in cfg.evaluation:  # a local data file is read (JSON, UTF-8) now, not when its stage comes
            if task.source.endswith((".jsonl", ".json")):
                for _, path in lang_paths(task.source, task.langs or cfg.langs):
                    list(iter_rows(path))
        check_tracking(cfg.tracking)
        if cfg.cluster is not None and importlib.util.find_spec("ray") is None:
            raise PolyriseError("cluster: backend ray needs Ray: pip install 'polyrise[ray]'")
        self.method.prepare()
        self.heldout  # noqa: B018

    def close(self) -> None:
        """Release the run dir for another run (the end of `run()` and of `with runner:` do)."""
        self.release_engine()
        self._lock.release()

    # -- engines -----------------------------------------------------------------------------
    def _load(self, key: str, label: str, build: Callable[[], Engine], system_prompt: str | None = None) -> Generator:
        """The generator of the one engine held at a time, (re)built when another is asked for."""
        if self._engine_key != key:
            self.release_engine()
            with self.console.status(f"loading {label}"):
                generator = Generator(build(), self.cache, self.generation_stats, system_prompt)
                self._generator, self._engine_key = generator, key
        assert self._generator is not None
        return self._generator

    def generator(self, spec: str) -> Generator:
        """The policy at `spec` (M0 or an iterate) on the policy's engine, with `generation.system_prompt`."""
        generation = self.config.generation
        model = self.config.model.model_copy(update={"spec": spec})
        return self._load(
            f"policy {spec}",
            f"{spec} ({generation.policy.engine})",
            lambda: open_engine(generation.policy, model, self.config.cluster),
            generation.system_prompt,
        )

    def translator(self, spec: str) -> Generator:
        """The translator: the policy at `spec` unless `generation.translator` names a fixed one."""
        role = self.config.generation.translator
        if role is None:
            return self.generator(spec)
        name = role.openai.model if role.openai else role.model
        return self._load(
            "translator", f"translator {name} ({role.engine})", lambda: open_engine(role, cluster=self.config.cluster)
        )

    def release_engine(self) -> None:
        if self._generator is None:
            return
        self._generator = self._engine_key = None
        gc.collect()
        import torch  # loaded by then: an engine was

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- where things are ---------------------------------------------------------------------
    def model_spec(self, k: int) -> str:
        """M(k): the configured model for k = 0, then the iterates."""
        return self.config.model.spec if k == 0 else str(self.layout.model_dir(k - 1))

    def translator_models(self, t: int) -> list[str]:
        """The models whose weights decide iteration `t`'s translations (none for an `openai` translator)."""
        role = self.config.generation.translator
        if role is None:
            return [self.model_spec(t)]
        return [role.model] if role.model else []

    def translator_settings(self) -> dict[str, Any]:
        role = self.config.generation.translator
        return {"translator": role.model_dump() if role else None, "model": self.config.model.model_dump()}

    # -- stages -----------------------------------------------------------------------------
    def stages(self, t: int) -> list[Stage]:
        """Iteration `t`: M0's measurements (t = 0), the method's data and training stages, M(t+1)'s measurements."""
        first = self._measure(0) if t == 0 else []
        return [*first, *self.method.stages(t), *self._measure(t + 1)]

    def run_stage(self, stage: Stage) -> bool:
        """Run `stage` unless the manifest says it already produced its outputs from the same inputs and they are
        unchanged (then False); in its own process when it loads a model and `stage_processes` is on (or training
        is multi-process). Ctrl-C raises `StageInterrupted`, and the stage is not recorded."""
        try:
            return self._run_stage(stage)
        except StageInterrupted:
            raise
        except KeyboardInterrupt:
            raise StageInterrupted(stage.name) from None

    def _input_hash(self, stage: Stage) -> str:
        return _digest(
            [_content_hash(p) for p in stage.inputs],
            [resolve_model(spec).fingerprint() for spec in stage.models],
            stage.settings,
        )

    def plan(self) -> list[tuple[Stage, str]]:
        """Every stage of every iteration in order, with what `run` would do with it: `done` (skipped), `to run`,
        or `to run (after X, ...)` when it reads what stage X, itself to run, writes: such inputs (iteration t's model
        for iteration t + 1, ...) may not exist yet, so they are not hashed. Writes nothing."""
        pending: dict[Path, str] = {}  # the outputs of the stages to run → the stage writing each
        plan = []
        for t in range(self.config.iterations):
            for stage in self.stages(t):
                reads = [*stage.inputs, *map(Path, stage.models)]
                upstream = dict.fromkeys(pending[p] for p in reads if p in pending)
                if upstream:
                    status = f"to run (after {', '.join(upstream)})"
                elif self.manifest.is_done(stage.name, self._input_hash(stage), stage.outputs):
                    status = "done"
                else:
                    status = "to run"
                if status != "done":
                    pending.update(dict.fromkeys(stage.outputs, stage.name))
                plan.append((stage, status))
        return plan

    def estimate(self) -> dict[str, int]:
        """The work of one iteration: the method's counts, the held-out answers of each new model, and the training
        steps ≈ pairs / global batch x epochs (with `pairs` the method's upper bound: the filters keep fewer)."""
        training = self.config.training
        work = self.method.estimate()
        batch = training.batch_size * training.gradient_accumulation_steps * training.num_processes
        work["training steps"] = math.ceil(math.ceil(work["pairs"] / batch) * training.epochs)
        if self.heldout:
            work["held-out answers per model"] = len(self.heldout)
        return work

    def _run_stage(self, stage: Stage) -> bool:
        input_hash = self._input_hash(stage)
        if self.manifest.is_done(stage.name, input_hash, stage.outputs):
            self.timings.append((stage.name, 0.0, "skipped (up to date)"))
            self.console.print(f"[dim]{stage.name}: up to date, skipped[/dim]")
            return False
        self.console.print(f"[bold]{stage.name}[/bold] …")
        start = time.perf_counter()
        training = self.config.training
        launched = stage.distributed and should_launch(training.num_processes, training.accelerate_config)
        launcher: list[str] | None = None
        if launched and self.config.cluster is None:
            launcher = launch_command(training.num_processes, training.accelerate_config)
        elif stage.loads_model and self.config.stage_processes:
            launcher = [sys.executable, "-m"]
        if launched and self.config.cluster is not None:
            self.release_engine()
            counts = self._in_child_process(stage.name, None)
        elif launcher is None:
            log = self.layout.stage_log(stage.name)
            with writing_into(self.run_dir, f"stage {stage.name}'s outputs"), library_output(log, self.verbose):
                counts = self.run_counted(stage)
        else:
            self.release_engine()
            counts = self._in_child_process(stage.name, launcher)
        seconds = time.perf_counter() - start
        self.manifest.record(
            stage.name,
            {
                "status": "done",
                "input_hash": input_hash,
                "outputs": [str(p) for p in stage.outputs],
                "output_hashes": [output_hash(p) for p in stage.outputs],
                "counts": counts,
                "seconds": round(seconds, 2),
                "versions": library_versions(),
            },
        )
        summary = ", ".join(f"{k} {v}" for k, v in counts.items())
        self.timings.append((stage.name, seconds, summary))
        self.console.print(f"{stage.name}: {seconds:.1f} s ({summary})")
        return True

    def _in_child_process(self, name: str, launcher: list[str] | None) -> dict[str, Any]:
        """Run one stage in a child process (`launcher` + `polyrise.cli stage ...`), or, with no launcher, under
        `accelerate launch` on every node of the run's Ray cluster; its error is ours."""
        result = self.layout.stage_result
        result.unlink(missing_ok=True)
        module = ["polyrise.cli", "stage", str(self.run_dir.absolute()), name, str(result.absolute())]
        module += ["--verbose"] if self.verbose else []
        if launcher is None:
            from polyrise.training.ray import launch_on_cluster  # imports Ray: only for a run on a cluster

            assert self.config.cluster is not None
            training = self.config.training
            try:
                launch_on_cluster(
                    self.config.cluster, training.num_processes, training.accelerate_config, module, Path.cwd()
                )
                code = 0
            except PolyriseError:
                if not result.is_file():  # else the stage's own error, below
                    raise
                code = 1
        else:
            preexec = die_with_parent if sys.platform == "linux" else None
            code = subprocess.run([*launcher, *module], preexec_fn=preexec).returncode
        outcome = json.loads(result.read_text()) if result.is_file() else {}
        result.unlink(missing_ok=True)
        if code == 0 and "counts" in outcome:
            return outcome["counts"]
        if code in (130, -signal.SIGINT):  # Ctrl-C reached the stage process (the CLI exits 130 on SIGINT)
            raise StageInterrupted(name)
        problem = outcome.get("error") or (
            f"killed by signal {-code}" if code < 0 else f"the stage process exited with code {code}"
        )
        raise PolyriseError(f"stage {name} failed: {problem}")

    def run_counted(self, stage: Stage) -> dict[str, Any]:
        """The stage body's counts, with `generated_tokens`: the tokens of what the policy and translator generated
        for it (cached outputs included; `Generator.generate`), where an engine could count them."""
        before = self.generation_stats["tokens"]
        counts = stage.run()
        if tokens := self.generation_stats["tokens"] - before:
            counts["generated_tokens"] = tokens
        return counts

    def find_stage(self, name: str) -> Stage:
        """The stage called `name` (`iter_<t>/...`), rebuilt from the config (a stage process runs it)."""
        for stage in self.stages(RunLayout.iteration_of(name)):
            if stage.name == name:
                return stage
        raise PolyriseError(f"{self.run_dir}: no stage {name!r} in this run")

    # -- held-out answers and evaluations, once per model -------------------------------------
    @cached_property
    def heldout(self) -> list[Prompt]:
        cfg = self.config
        langs = [cfg.source_lang, *cfg.languages]
        return load_prompts(cfg.heldout.prompts, langs, cfg.source_lang) if cfg.heldout else []

    @property
    def heldout_params(self) -> SamplingSettings:
        assert self.config.heldout is not None
        return self.config.generation.answer.model_copy(update={"max_new_tokens": self.config.heldout.max_new_tokens})

    def _measure(self, k: int) -> list[Stage]:
        """M(k)'s held-out answers and configured evaluations (M(k) is judged head-to-head against M(k-1))."""
        cfg, where = self.config, f"iter_{max(k - 1, 0)}"
        stages = []
        if self.heldout:
            heldout = [p.model_dump() for p in self.heldout]
            stages.append(
                Stage(
                    f"{where}/{HELDOUT_STAGE}{k}",
                    lambda: self._answer_heldout(k),
                    outputs=[self.layout.heldout_file(k)],
                    models=[self.model_spec(k)],
                    settings=[
                        cfg.model.model_dump(),
                        heldout,
                        self.heldout_params.model_dump(),
                        *cfg.generation.prompting(),
                    ],
                )
            )
        if cfg.evaluation:
            langs = [cfg.source_lang, *cfg.languages]
            data = [f for task in cfg.evaluation for f in _task_files(task, task.langs or langs)]
            judges = [j.model for task in cfg.evaluation if (j := getattr(task, "judge", None)) and j.model]
            stages.append(
                Stage(
                    f"{where}/{EVAL_STAGE}{k}",
                    lambda: self._evaluate(k),
                    outputs=[self.layout.model_scores(k)],
                    models=[self.model_spec(k), *judges],
                    inputs=[*data, *([self.layout.model_scores(k - 1)] if k else [])],
                    settings=[
                        cfg.model.model_dump(),
                        [task.model_dump() for task in cfg.evaluation],
                        cfg.seed,
                        cfg.langid.model_dump(),
                        *cfg.generation.prompting(),
                    ],
                )
            )
        return stages

    def _answer_heldout(self, k: int) -> dict[str, Any]:
        generator = self.generator(self.model_spec(k))
        answers = answer_prompts(generator, self.heldout, self.heldout_params, desc="held-out answers")
        return {"responses": write_jsonl(self.layout.heldout_file(k), answers)}

    def _evaluate(self, k: int) -> dict[str, Any]:
        cfg = self.config
        baseline = (self.layout.eval_dir(k - 1), f"M{k - 1}") if k else None
        scores = evaluate_model(
            cfg.evaluation,
            self.generator(self.model_spec(k)),
            [cfg.source_lang, *cfg.languages],
            self.layout.eval_dir(k),
            f"M{k}",
            seed=cfg.seed,
            baseline=baseline,
            langid=cfg.langid,
        )
        write_json(self.layout.model_scores(k), scores)
        return {"tasks": len(scores)}

    def scores(self, t: int) -> dict[str, Any]:
        """Iteration `t`'s `scores.json`: every measurement of M(t) and M(t+1), and the method's own of iteration `t`
        (`Method.scores`), by task then model."""
        scores: dict[str, Any] = {}
        for k in (t, t + 1):
            if self.heldout:
                answers = read_jsonl(self.layout.heldout_file(k), Response)
                rates = off_target_rates(answers, self.config.langid, self.config.seed)
                scores.setdefault("heldout", {})[f"M{k}"] = rates
            if self.config.evaluation:
                for key, by_row in json.loads(self.layout.model_scores(k).read_text()).items():
                    scores.setdefault(key, {})[f"M{k}"] = by_row
        return scores | self.method.scores(t)

    # -- training: the method's trainer on the method's data -----------------------------------
    def train_stage(self, t: int) -> Stage:
        """Iteration `t`'s training of M(t+1) from M(t) by the method's trainer on its data file."""
        data = self.layout.file(t, self.method.data_file)
        return Stage(
            f"iter_{t}/train",
            lambda: self.train(t, data),
            outputs=[self.layout.model_dir(t)],
            inputs=[data],
            models=[self.model_spec(t)],
            settings=[
                self.config.model.model_dump(),
                self.config.training.model_dump(exclude=set(LAUNCH_FIELDS)),
                self.config.seed,
            ],
            distributed=True,
        )

    def train(self, t: int, data: Path) -> dict[str, Any]:
        """Train M(t+1) from M(t) on the method's records in `data`; the counts to record."""
        cfg = self.config
        rows = read_jsonl(data, self.method.record)
        self.release_engine()  # free the generation copy of the weights before training
        with trainer_reporting(cfg.tracking, self.run_dir, f"{cfg.name}-iter_{t}-train") as report:
            metrics = self.method.train(
                resolve_model(self.model_spec(t)),
                rows,
                self.layout.model_dir(t),
                cfg.training,
                cfg.model,
                seed=cfg.seed,
                cache=self.cache.path,
                report=report,
            )
        return {"examples": len(rows), **{k: round(metrics[k], 4) for k in self.method.shown if k in metrics}}

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        """Every iteration, holding the run dir's lock until done (or failed)."""
        with self:
            if self.config.tracking.backend != "none":
                self.tracker = Tracker(self.config.tracking, self.run_dir, self.config.name)
            try:
                return [self.iteration(t) for t in range(self.config.iterations)]
            finally:
                if self.tracker is not None:
                    self.tracker.close()

    def iteration(self, t: int) -> dict[str, Any]:
        ran = [self.run_stage(stage) for stage in self.stages(t)]
        scores = self.scores(t)
        if scores:
            write_json(self.layout.scores(t), scores)
        summary = {
            "iteration": t,
            "stats": self.method.stats(t),
            "off_target": scores.get("heldout", {}),
            "scores": scores,
        }
        if self.tracker is not None and any(ran):  # an iteration up to date was tracked when it ran
            self.track(t, summary["stats"], scores)
        self.console.print(self.method.summary_table(summary))
        if self.show_scores is not None:
            for key in scores.keys() - {"heldout"}:
                self.console.print(self.show_scores(key, scores[key]))
        return summary

    def track(self, t: int, stats: dict[str, Any], scores: dict[str, Any]) -> None:
        """Iteration `t`'s metrics to the tracker (`polyrise.tracking`): at step t its pairs, training summary and
        the method's own scores (the reward of M(t)'s pairs), with M0's measurements when t = 0; at step t + 1
        the measurements of M(t+1)."""
        assert self.tracker is not None
        train = self.manifest.stages.get(f"iter_{t}/train", {}).get("counts", {})
        method = self.method.scores(t)
        at_t = {task: by_model[f"M{t}"] for task, by_model in scores.items() if t == 0 or task in method}
        self.tracker.log(t, flatten({"pairs": stats, "train": train, **at_t}))
        made = {task: by_model[f"M{t + 1}"] for task, by_model in scores.items() if f"M{t + 1}" in by_model}
        self.tracker.log(t + 1, flatten(made))


def _task_files(task: Any, langs: Sequence[str]) -> list[Path]:
    """The local data files an evaluation task reads (its path-valued settings, `{lang}` expanded): their
    contents, not their names, decide whether its scores are up to date."""
    values = [v for v in task.model_dump().values() if isinstance(v, str)]
    return [f for v in values for f in source_files(v, langs)]


def run_stage(run_dir: Path, name: str, result: Path, verbose: bool = False) -> None:
    """The child side of a stage process: rebuild the run from `run_dir/config.yaml`, run one stage (the
    libraries' output to its log), and write `{"counts": ...}` or `{"error": message}` to `result` (rank 0 only
    when training is multi-process)."""
    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        layout = RunLayout(run_dir)
        runner = Runner(load_config(layout.config), child=True, verbose=verbose)
        with runner, writing_into(run_dir, f"stage {name}'s outputs"), library_output(layout.stage_log(name), verbose):
            outcome: dict[str, Any] = {"counts": runner.run_counted(runner.find_stage(name))}
    except PolyriseError as e:
        outcome = {"error": str(e)}
    except Exception as e:
        outcome = {"error": f"{type(e).__name__}: {e} (traceback above)"}
        traceback.print_exc()
    if main_rank:
        write_json(result, outcome)
    if "error" in outcome:
        raise SystemExit(1)


def run_pipeline(
    config: RunConfig,
    console: Console | None = None,
    verbose: bool = False,
    show_scores: Callable[[str, dict[str, Any]], RenderableType] | None = None,
) -> list[dict[str, Any]]:
    """Run every iteration of `config`; prints stage timings and per-language summaries (`verbose`: the
    libraries' output too, see `Runner.verbose`; `show_scores`: each task's scores table after each iteration)."""
    runner = Runner(config, console or make_console(), verbose=verbose, show_scores=show_scores)
    start = time.perf_counter()
    summaries = runner.run()
    timing = Table(title="stage timings")
    timing.add_column("stage")
    timing.add_column("seconds", justify="right")
    timing.add_column("result")
    for key, seconds, note in runner.timings:
        timing.add_row(key, f"{seconds:.1f}", note)
    timing.add_row("total", f"{time.perf_counter() - start:.1f}", "")
    runner.console.print(timing)
    return summaries
