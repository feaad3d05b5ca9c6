"""The iterative loop M0 → M1 → …: stages wired together, each skipped when its outputs and input hashes match."""

from __future__ import annotations

import gc
import hashlib
import json
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
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.table import Table

from polyrise.alignment import DROP_REASONS, build_question_pairs
from polyrise.config import RunConfig, SamplingSettings
from polyrise.errors import PolyriseError
from polyrise.evaluate import run_task
from polyrise.evaluation.fidelity import off_target_rates
from polyrise.generation import Engine, Generator, answer_prompts, open_engine
from polyrise.generation.cache import GenerationCache
from polyrise.io import atomic_open, file_hash, read_jsonl, write_json, write_jsonl
from polyrise.models import resolve_model
from polyrise.records import PreferencePair, Prompt, QuestionPair, Response, Translation
from polyrise.rewarding import build_pairs
from polyrise.self_translation import cross_translate, translate_prompts
from polyrise.sources import load_prompts
from polyrise.training.launch import LAUNCH_FIELDS, launch_command, should_launch


class Manifest:
    """`manifest.json`: per stage its status, input hash, outputs, counts and seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stages: dict[str, dict[str, Any]] = json.loads(path.read_text())["stages"] if path.is_file() else {}

    def is_done(self, key: str, input_hash: str, outputs: Sequence[Path]) -> bool:
        entry = self.stages.get(key, {})
        return (
            entry.get("status") == "done" and entry.get("input_hash") == input_hash and all(p.exists() for p in outputs)
        )

    def record(self, key: str, entry: dict[str, Any]) -> None:
        self.stages[key] = entry
        write_json(self.path, {"stages": self.stages})


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class IterationPaths:
    """The files of `iter_<t>/`."""

    prompts: Path
    prompt_translations: Path
    responses: Path
    translations: Path
    pairs: Path
    pairs_stats: Path
    question_pairs: Path
    question_stats: Path
    model: Path
    heldout_before: Path
    heldout_after: Path
    eval_scores: Path
    scores: Path

    @classmethod
    def under(cls, root: Path) -> IterationPaths:
        return cls(
            prompts=root / "prompts.jsonl",
            prompt_translations=root / "prompt_translations.jsonl",
            responses=root / "responses.jsonl",
            translations=root / "translations.jsonl",
            pairs=root / "pairs.jsonl",
            pairs_stats=root / "pairs_stats.json",
            question_pairs=root / "question_pairs.jsonl",
            question_stats=root / "question_pairs_stats.json",
            model=root / "model",
            heldout_before=root / "eval" / "heldout_before.jsonl",
            heldout_after=root / "eval" / "heldout_after.jsonl",
            eval_scores=root / "eval" / "eval_scores.json",
            scores=root / "eval" / "scores.json",
        )


@dataclass
class Runner:
    """Runs one config's iterations. The parent only orchestrates: with `stage_processes`, every stage that loads a
    model runs in its own process (`polyrise.cli stage`), so GPU and host memory are returned between stages."""

    config: RunConfig
    console: Console = field(default_factory=Console)
    child: bool = False
    """True inside a stage process: bodies run here, the manifest is the parent's."""
    timings: list[tuple[str, float, str]] = field(default_factory=list)
    _engine_key: str | None = None
    _generator: Generator | None = None

    def __post_init__(self) -> None:
        self.run_dir = self.config.run_dir
        resolve_model(self.config.model.spec)  # fail on a missing model before anything is written
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PolyriseError(f"{self.run_dir}: cannot create the run directory ({e.strerror})") from None
        self.manifest = Manifest(self.run_dir / "manifest.json")
        self.cache = GenerationCache(self.run_dir / "generations.sqlite")
        if not self.child:
            for orphan in self.run_dir.rglob(".*.tmp"):  # a killed run's unfinished atomic writes
                if orphan.is_file():
                    orphan.unlink()
            # the stage processes rebuild the run from this file
            with atomic_open(self.run_dir / "config.yaml") as fh:
                yaml.safe_dump(json.loads(self.config.model_dump_json()), fh, sort_keys=False, allow_unicode=True)

    # -- engines -----------------------------------------------------------------------------
    def _load(self, key: str, label: str, build: Callable[[], Engine]) -> Generator:
        """The generator of the one engine held at a time, (re)built when another is asked for."""
        if self._engine_key != key:
            self.release_engine()
            with self.console.status(f"loading {label}"):
                self._generator, self._engine_key = Generator(build(), self.cache), key
        assert self._generator is not None
        return self._generator

    def generator(self, spec: str) -> Generator:
        """The policy at `spec` (M0 or an iterate) on the policy's engine."""
        policy = self.config.generation.policy
        model = self.config.model.model_copy(update={"spec": spec})
        return self._load(f"policy {spec}", f"{spec} ({policy.engine})", lambda: open_engine(policy, model))

    def translator(self, spec: str) -> Generator:
        """The translator: the policy at `spec` unless `generation.translator` names a fixed one."""
        role = self.config.generation.translator
        if role is None:
            return self.generator(spec)
        name = role.openai.model if role.openai else role.model
        return self._load("translator", f"translator {name} ({role.engine})", lambda: open_engine(role))

    def release_engine(self) -> None:
        self._generator = self._engine_key = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- stage bookkeeping ---------------------------------------------------------------------
    def stage(
        self,
        key: str,
        inputs: Sequence[Path],
        params: Any,
        outputs: Sequence[Path],
        body: str,
        *args: Any,
        loads_model: bool = True,
    ) -> None:
        """Run the body method `body(*args)` unless the manifest says it already produced `outputs` from the same
        inputs; in its own process when it loads a model and `stage_processes` is on (or training is multi-process)."""
        input_hash = _digest([file_hash(p) if p.is_file() else _dir_fingerprint(p) for p in inputs], params)
        if self.manifest.is_done(key, input_hash, outputs):
            self.timings.append((key, 0.0, "skipped (up to date)"))
            self.console.print(f"[dim]{key}: up to date, skipped[/dim]")
            return
        self.console.print(f"[bold]{key}[/bold] …")
        start = time.perf_counter()
        training = self.config.training
        launcher: list[str] | None = None
        if body == "train_body" and should_launch(training.num_processes, training.accelerate_config):
            launcher = launch_command(training.num_processes, training.accelerate_config)
        elif loads_model and self.config.stage_processes:
            launcher = [sys.executable, "-m"]
        if launcher is None:
            counts = getattr(self, body)(*args)
        else:
            self.release_engine()
            counts = self._in_process(key, launcher, body, list(args))
        seconds = time.perf_counter() - start
        self.manifest.record(
            key,
            {
                "status": "done",
                "input_hash": input_hash,
                "outputs": [str(p) for p in outputs],
                "counts": counts,
                "seconds": round(seconds, 2),
            },
        )
        summary = ", ".join(f"{k} {v}" for k, v in counts.items())
        self.timings.append((key, seconds, summary))
        self.console.print(f"{key}: {seconds:.1f} s ({summary})")

    def _in_process(self, key: str, launcher: list[str], body: str, args: list[Any]) -> dict[str, Any]:
        """Run one stage body in a child process (`launcher` + `polyrise.cli stage ...`); its error is ours."""
        result = self.run_dir / ".stage-result.json"
        result.unlink(missing_ok=True)
        command = [*launcher, "polyrise.cli", "stage", str(self.run_dir), body, json.dumps(args), str(result)]
        code = subprocess.run(command, preexec_fn=_die_with_parent if sys.platform == "linux" else None).returncode
        outcome = json.loads(result.read_text()) if result.is_file() else {}
        result.unlink(missing_ok=True)
        if code == 0 and "counts" in outcome:
            return outcome["counts"]
        problem = outcome.get("error") or (
            f"killed by signal {-code}" if code < 0 else f"the stage process exited with code {code}"
        )
        raise PolyriseError(f"stage {key} failed: {problem}")

    # -- the loop --------------------------------------------------------------------------------
    def model_spec(self, t: int) -> str:
        return self.config.model.spec if t == 0 else str(self.run_dir / f"iter_{t - 1}" / "model")

    def paths(self, t: int) -> IterationPaths:
        return IterationPaths.under(self.run_dir / f"iter_{t}")

    def model_params(self, t: int) -> dict[str, Any]:
        """What identifies M(t): the weights' fingerprint (not just the spec), so a changed local model dir reruns
        its stages."""
        return {**self.config.model.model_dump(), "fingerprint": resolve_model(self.model_spec(t)).fingerprint()}

    def translator_params(self, t: int) -> dict[str, Any]:
        """What identifies the translator's outputs: M(t) itself, or the fixed translator's settings."""
        role = self.config.generation.translator
        return self.model_params(t) if role is None else role.model_dump()

    @cached_property
    def source_prompts(self) -> list[Prompt]:
        cfg = self.config
        if cfg.method != "language-imbalance":
            return []
        return load_prompts(cfg.prompts, [cfg.source_lang], cfg.source_lang)

    @cached_property
    def heldout(self) -> list[Prompt]:
        cfg = self.config
        langs = [cfg.source_lang, *cfg.languages]
        return load_prompts(cfg.heldout.prompts, langs, cfg.source_lang) if cfg.heldout else []

    @property
    def heldout_params(self) -> SamplingSettings:
        assert self.config.heldout is not None
        return self.config.generation.answer.model_copy(update={"max_new_tokens": self.config.heldout.max_new_tokens})

    def run(self) -> list[dict[str, Any]]:
        cfg = self.config
        self.source_prompts, self.heldout  # noqa: B018 - fail on bad prompt sources before any stage runs
        summaries = [self.iteration(t) for t in range(cfg.iterations)]
        self.release_engine()
        return summaries

    def iteration(self, t: int) -> dict[str, Any]:
        """Data stages of the method, held-out answers of M(t), training, then M(t+1)'s answers and evaluations."""
        if self.config.method == "question-alignment":
            self.question_data(t)
        else:
            self.preference_data(t)
        return self.train_and_evaluate(t)

    def question_data(self, t: int) -> None:
        """Question-alignment examples from aligned files, or from the model's translations of English questions."""
        cfg = self.config
        assert cfg.alignment is not None
        aligned_files = "{lang}" in cfg.alignment.questions.source
        paths = self.paths(t)
        self.stage(
            f"iter_{t}/questions",
            [],
            [cfg.alignment.model_dump(), cfg.source_lang]
            + ([] if aligned_files else [self.translator_params(t), cfg.generation.translate.model_dump()]),
            [paths.question_pairs, paths.question_stats],
            "questions_body",
            t,
            loads_model=not aligned_files,
        )

    def questions_body(self, t: int) -> dict[str, Any]:
        cfg, paths = self.config, self.paths(t)
        assert cfg.alignment is not None
        align = cfg.alignment
        directions = align.directions(cfg.source_lang)
        needed = list(dict.fromkeys(code for pair in directions for code in pair))
        failed: set[tuple[str, str]] = set()
        if "{lang}" in align.questions.source:
            prompts = load_prompts(align.questions, needed, cfg.source_lang)
        else:
            english = load_prompts(align.questions, [cfg.source_lang], cfg.source_lang)
            others = [lang for lang in needed if lang != cfg.source_lang]
            translator = self.translator(self.model_spec(t))
            prompts, attempts = translate_prompts(translator, english, others, cfg.generation.translate)
            write_jsonl(paths.prompt_translations, attempts)
            failed = {(a.id, a.lang) for a in attempts if a.output is None}
        pairs, stats = build_question_pairs(prompts, directions, align.template, failed)
        write_json(paths.question_stats, stats)
        write_jsonl(paths.question_pairs, pairs)
        return {"question_pairs": len(pairs)}

    def preference_data(self, t: int) -> None:
        """Language-imbalance pairs: self-translated prompts, answers, cross-translations, filtered pairs."""
        cfg, gen, paths = self.config, self.config.generation, self.paths(t)
        self.stage(
            f"iter_{t}/prompts",
            [],
            [
                self.translator_params(t),
                [p.model_dump() for p in self.source_prompts],
                cfg.languages,
                gen.translate.model_dump(),
            ],
            [paths.prompts, paths.prompt_translations],
            "prompts_body",
            t,
        )
        self.stage(
            f"iter_{t}/generate",
            [paths.prompts],
            [self.model_params(t), gen.answer.model_dump()],
            [paths.responses],
            "generate_body",
            t,
        )
        self.stage(
            f"iter_{t}/translate",
            [paths.responses],
            [self.translator_params(t), gen.translate.model_dump()],
            [paths.translations],
            "translate_body",
            t,
        )
        self.stage(
            f"iter_{t}/pairs",
            [paths.prompts, paths.prompt_translations, paths.responses, paths.translations],
            [cfg.source_lang, cfg.languages, cfg.filters.model_dump()],
            [paths.pairs, paths.pairs_stats],
            "pairs_body",
            t,
            loads_model=False,
        )

    def prompts_body(self, t: int) -> dict[str, Any]:
        cfg, paths = self.config, self.paths(t)
        translator = self.translator(self.model_spec(t))
        prompts, attempts = translate_prompts(translator, self.source_prompts, cfg.languages, cfg.generation.translate)
        write_jsonl(paths.prompt_translations, attempts)
        write_jsonl(paths.prompts, prompts)
        return {"prompts": len(prompts), "translation_failures": sum(a.output is None for a in attempts)}

    def generate_body(self, t: int) -> dict[str, Any]:
        paths = self.paths(t)
        prompts = read_jsonl(paths.prompts, Prompt)
        generator = self.generator(self.model_spec(t))
        cached = generator.stats["cached"]
        n = write_jsonl(paths.responses, answer_prompts(generator, prompts, self.config.generation.answer))
        return {"responses": n, "from_cache": generator.stats["cached"] - cached}

    def translate_body(self, t: int) -> dict[str, Any]:
        cfg, paths = self.config, self.paths(t)
        responses = read_jsonl(paths.responses, Response)
        translator = self.translator(self.model_spec(t))
        translations = cross_translate(translator, responses, cfg.source_lang, cfg.languages, cfg.generation.translate)
        write_jsonl(paths.translations, translations)
        return {"translations": len(translations), "failures": sum(x.output is None for x in translations)}

    def pairs_body(self, t: int) -> dict[str, Any]:
        cfg, paths = self.config, self.paths(t)
        prompts = {(p.id, p.lang): p.instruction for p in read_jsonl(paths.prompts, Prompt)}
        pairs, stats = build_pairs(
            prompts,
            read_jsonl(paths.responses, Response),
            read_jsonl(paths.translations, Translation),
            cfg.source_lang,
            cfg.languages,
            cfg.filters,
        )
        attempts = read_jsonl(paths.prompt_translations, Translation)
        for lang in cfg.languages:
            stats[lang]["prompt_translation_failures"] = sum(a.output is None and a.lang == lang for a in attempts)
        write_json(paths.pairs_stats, stats)
        write_jsonl(paths.pairs, pairs)
        return {"pairs": len(pairs)}

    def heldout_body(self, t: int, when: str) -> dict[str, Any]:
        """Held-out answers of M(t) (`before`) or M(t+1) (`after`)."""
        paths = self.paths(t)
        spec, out = (
            (self.model_spec(t), paths.heldout_before) if when == "before" else (str(paths.model), paths.heldout_after)
        )
        answers = answer_prompts(self.generator(spec), self.heldout, self.heldout_params, desc="held-out answers")
        return {"responses": write_jsonl(out, answers)}

    def train_body(self, t: int) -> dict[str, Any]:
        cfg, paths = self.config, self.paths(t)
        self.release_engine()  # free the generation copy of the weights before training
        if cfg.method == "question-alignment":
            from polyrise.training.sft import train_sft as trainer

            rows: list[Any] = read_jsonl(paths.question_pairs, QuestionPair)
        else:
            from polyrise.training.dpo import train_dpo as trainer

            rows = read_jsonl(paths.pairs, PreferencePair)
        metrics = trainer(
            resolve_model(self.model_spec(t)),
            rows,
            paths.model,
            cfg.training,
            seed=cfg.seed,
            dtype=cfg.model.dtype,
            chat_template=cfg.model.chat_template,
            trust_remote_code=cfg.model.trust_remote_code,
        )
        shown = ("train_loss", "rewards/accuracies", "rewards/margins", "mean_token_accuracy", "train_runtime")
        return {"examples": len(rows), **{k: round(metrics[k], 4) for k in shown if k in metrics}}

    def train_and_evaluate(self, t: int) -> dict[str, Any]:
        cfg, paths = self.config, self.paths(t)
        model_params = self.model_params(t)
        heldout = [p.model_dump() for p in self.heldout]
        if self.heldout:
            self.stage(
                f"iter_{t}/heldout_before",
                [],
                [model_params, heldout, self.heldout_params.model_dump()],
                [paths.heldout_before],
                "heldout_body",
                t,
                "before",
            )
        train_data = paths.question_pairs if cfg.method == "question-alignment" else paths.pairs
        self.stage(
            f"iter_{t}/train",
            [train_data],
            [model_params, cfg.training.model_dump(exclude=set(LAUNCH_FIELDS)), cfg.seed],
            [paths.model],
            "train_body",
            t,
        )
        scores: dict[str, Any] = {}
        if self.heldout:
            self.stage(
                f"iter_{t}/heldout_after",
                [paths.model],
                [model_params, heldout, self.heldout_params.model_dump()],
                [paths.heldout_after],
                "heldout_body",
                t,
                "after",
            )
            min_chars = cfg.filters.langid_min_chars
            scores["heldout"] = {
                f"M{t}": off_target_rates(read_jsonl(paths.heldout_before, Response), min_chars),
                f"M{t + 1}": off_target_rates(read_jsonl(paths.heldout_after, Response), min_chars),
            }
        if cfg.evaluation:
            self.stage(
                f"iter_{t}/eval",
                [paths.model],
                [model_params, [task.model_dump() for task in cfg.evaluation], cfg.seed],
                [paths.eval_scores],
                "eval_body",
                t,
            )
            scores.update(json.loads(paths.eval_scores.read_text()))
        if scores:
            write_json(paths.scores, scores)
        stats_file = paths.question_stats if cfg.method == "question-alignment" else paths.pairs_stats
        summary = {
            "iteration": t,
            "stats": json.loads(stats_file.read_text()),
            "off_target": scores.get("heldout", {}),
            "scores": scores,
        }
        if cfg.method == "question-alignment":
            self.console.print(question_table(summary["stats"]))
        else:
            self.console.print(summary_table(summary, [cfg.source_lang, *cfg.languages]))
        for key in scores.keys() - {"heldout"}:
            self.console.print(scores_table(key, scores[key]))
        return summary

    def eval_body(self, t: int) -> dict[str, Any]:
        """Every configured evaluation on M(t) and M(t+1); M(t+1) is judged head-to-head against M(t)."""
        cfg, out = self.config, self.paths(t).eval_scores
        langs = [cfg.source_lang, *cfg.languages]
        judges: dict[str, Generator] = {}
        results: dict[str, dict[str, Any]] = {}
        for label, spec in ((f"M{t}", self.model_spec(t)), (f"M{t + 1}", str(self.paths(t).model))):
            generator = self.generator(spec)
            for task in cfg.evaluation:
                judge = None
                if task.judge is not None:
                    settings_key = task.judge.model_dump_json()
                    if settings_key not in judges:
                        judges[settings_key] = Generator(open_engine(task.judge), self.cache)
                    judge = judges[settings_key]
                baseline = f"M{t}" if label != f"M{t}" else None
                results.setdefault(task.key, {})[label] = run_task(
                    task, generator, langs, out.parent, label, seed=cfg.seed, judge=judge, baseline=baseline
                )
        write_json(out, results)
        return {"tasks": len(cfg.evaluation)}


def run_stage(run_dir: Path, body: str, args: list[Any], result: Path) -> None:
    """The child side of a stage process: rebuild the run from `run_dir/config.yaml`, run one body, and write
    `{"counts": ...}` or `{"error": message}` to `result` (rank 0 only when training is multi-process)."""
    from polyrise.config import load_config

    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        runner = Runner(load_config(run_dir / "config.yaml"), child=True)
        outcome: dict[str, Any] = {"counts": getattr(runner, body)(*args)}
    except PolyriseError as e:
        outcome = {"error": str(e)}
    except Exception as e:
        outcome = {"error": f"{type(e).__name__}: {e} (traceback above)"}
        traceback.print_exc()
    if main_rank:
        write_json(result, outcome)
    if "error" in outcome:
        raise SystemExit(1)


def _die_with_parent() -> None:
    """Ask Linux to kill a stage process when the orchestrating parent dies (kill -9 included)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _dir_fingerprint(path: Path) -> str:
    return resolve_model(str(path)).fingerprint() if path.is_dir() else "missing"


_SHORT_REASONS = {
    "translation_failure": "transl",
    "empty": "empty",
    "identical": "same",
    "degenerate_repetition": "repeat",
    "wrong_language": "lang",
    "length_ratio": "ratio",
}


def _dropped(counts: dict[str, Any]) -> str:
    return ", ".join(f"{_SHORT_REASONS[r]} {n}" for r, n in counts["dropped"].items() if n) or "-"


def summary_table(summary: dict[str, Any], langs: list[str]) -> Table:
    """Per language: pairs kept/dropped by reason, translation failures, off-target rate before → after."""
    t = summary["iteration"]
    table = Table(
        title=f"iteration {t}: M{t} → M{t + 1}",
        caption="dropped: " + ", ".join(f"{short} = {reason}" for reason, short in _SHORT_REASONS.items()),
    )
    for col in (
        "lang",
        "kept L/en",
        "dropped (pair in L)",
        "dropped (pair in en)",
        "transl. fail",
        f"off-target M{t}→M{t + 1}",
    ):
        table.add_column(col)
    for lang in langs:
        s = summary["stats"].get(lang)
        cells = ["-"] * 4
        if s:
            failures = (
                s["prompt_translation_failures"]
                + s["target"]["dropped"]["translation_failure"]
                + s["english"]["dropped"]["translation_failure"]
            )
            cells = [
                f"{s['target']['kept']}/{s['english']['kept']}",
                _dropped(s["target"]),
                _dropped(s["english"]),
                str(failures),
            ]
        off = summary["off_target"]
        before, after = off.get(f"M{t}", {}).get(lang), off.get(f"M{t + 1}", {}).get(lang)
        rate = "-"
        if before and after and before["n"] and after["n"]:
            rate = f"{before['off_target']:.0%} → {after['off_target']:.0%} (n={after['n']})"
        table.add_row(lang, *cells, rate)
    return table


def question_table(stats: dict[str, Any]) -> Table:
    """Per training direction: question pairs kept and dropped by reason."""
    table = Table(title="question-alignment data")
    for col in ("direction", "kept", *DROP_REASONS):
        table.add_column(col, justify="right")
    for direction, s in stats.items():
        table.add_row(direction, str(s["kept"]), *(str(s["dropped"][r]) for r in DROP_REASONS))
    return table


def scores_table(task: str, by_model: dict[str, Any]) -> Table:
    """One evaluation task: rows (languages or directions) x models, for each headline metric it reports."""
    from polyrise.report import HEADLINE_METRICS, metric_table

    table = Table(title=f"evaluation: {task}")
    table.add_column("row")
    columns = []
    for metric in HEADLINE_METRICS:
        rows, labels, values = metric_table(by_model, metric)
        if values:
            columns.append((metric, rows, labels, values))
    all_rows = list(dict.fromkeys(r for _, rows, _, _ in columns for r in rows))
    for metric, _, labels, _ in columns:
        for label in labels:
            table.add_column(f"{metric} {label}", justify="right")
    for row in all_rows:
        cells = [
            f"{values[(row, label)]:.3f}" if (row, label) in values else "-"
            for _, _, labels, values in columns
            for label in labels
        ]
        table.add_row(row, *cells)
    return table


def run_pipeline(config: RunConfig, console: Console | None = None) -> list[dict[str, Any]]:
    """Run every iteration of `config`; prints stage timings and per-language summaries."""
    runner = Runner(config, console or Console())
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
