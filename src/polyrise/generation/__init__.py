"""Generation: cached generation and log-likelihoods over any engine (`base.Engine`, looked up by name in
`polyrise.plugins.ENGINES`), and the generate stage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from polyrise.console import progress as progress_bar
from polyrise.generation.base import ChatRequest, Engine, LogLikelihood, render_chat
from polyrise.generation.cache import GenerationCache
from polyrise.plugins import ENGINES, load
from polyrise.records import Prompt, Response
from polyrise.settings import ClusterSettings, EngineSettings, ModelSettings, SamplingSettings

__all__ = [
    "CHUNK_BATCHES",
    "ChatRequest",
    "Engine",
    "Generator",
    "LogLikelihood",
    "answer_prompts",
    "new_stats",
    "open_engine",
    "render_chat",
]

CHUNK_BATCHES = 4
"""Batches per generator chunk: what is computed, then committed to the cache, at a time."""


COUNT_SLICE = 1024
"""Outputs tokenised at a time to count their tokens."""


def new_stats() -> dict[str, int]:
    """A generator's counters: requests answered from the cache, generated, scored, and the generated outputs'
    tokens (`Generator.generate`)."""
    return {"cached": 0, "generated": 0, "scored": 0, "tokens": 0}


def open_engine(
    settings: EngineSettings, model: ModelSettings | None = None, cluster: ClusterSettings | None = None
) -> Engine:
    """The engine a role's settings name. `model` gives the local model's spec and loading options (default:
    `settings.model` with default options); the `openai` engine ignores it. With `cluster`, a local engine (hf,
    vllm) runs as replicas on that Ray cluster (`generation.ray.RayEngine`); an `openai` engine stays a client
    here (its servers are the replicas)."""
    if cluster is not None and settings.openai is None:
        from polyrise.generation.ray import RayEngine  # imports Ray (extra `ray`): only for a run on a cluster

        return RayEngine(cluster, settings, model)
    engine: type[Engine] = load("engine", ENGINES, settings.engine)
    return engine.from_settings(settings, model)


@dataclass
class Generator:
    """Runs an engine through a persistent cache, so a killed or repeated stage never regenerates."""

    engine: Engine
    cache: GenerationCache
    stats: dict[str, int] = field(default_factory=new_stats)
    """Counters (`new_stats`); several generators may share one dict (a run's policy and translator)."""
    system_prompt: str | None = None
    """The system turn put before every chat without one (`generation.system_prompt` for the policy)."""

    def render(self, request: ChatRequest) -> str:
        """The text the model reads for `request`, system turn included: a scoring context, or a cache key's prompt."""
        return self.engine.render(request.with_system(self.system_prompt))

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingSettings, desc: str = "generating"
    ) -> list[str]:
        """Each request's continuation, from the cache or the engine. `stats["tokens"]` grows by the outputs'
        tokens in the engine's `tokenizer` (the local engines have one; a server's are not counted), cached ones
        included: what the requests cost to generate, whoever generated them first (the stop token not counted)."""
        requests = [r.with_system(self.system_prompt) for r in requests]
        rendered = [self.engine.render(r) for r in requests]
        keys = [self.cache.key(self.engine.fingerprint, text, params) for text in rendered]
        found: dict[str, Any] = self.cache.get_many(keys)
        todo = sorted({k: i for i, k in enumerate(keys) if k not in found}.values(), key=lambda i: len(rendered[i]))
        self._fill(
            keys,
            todo,
            found,
            lambda part: self.engine.complete([requests[i] for i in part], params),
            self.cache.put_many,
            "generated",
            desc,
        )
        outputs = [found[k] for k in keys]
        if (tokenizer := getattr(self.engine, "tokenizer", None)) is not None:
            for start in range(0, len(outputs), COUNT_SLICE):  # a slice's ids at a time: a stage may ask for millions
                ids = tokenizer(outputs[start : start + COUNT_SLICE], add_special_tokens=False)["input_ids"]
                self.stats["tokens"] += sum(map(len, ids))
        return outputs

    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], max_tokens: int | None = None, desc: str = "scoring"
    ) -> list[LogLikelihood]:
        """The engine's log-likelihoods through the cache (keyed by fingerprint, context, continuation and
        truncation), committed per chunk like generations."""
        keys = [
            self.cache.key(self.engine.fingerprint, context, {"loglik": continuation, "max_tokens": max_tokens})
            for context, continuation in requests
        ]
        found: dict[str, Any] = {k: LogLikelihood(v[0], tuple(v[1])) for k, v in self.cache.get_json(keys).items()}
        todo = list({k: i for i, k in enumerate(keys) if k not in found}.values())
        self._fill(
            keys,
            todo,
            found,
            lambda part: self.engine.loglikelihood([requests[i] for i in part], max_tokens),
            lambda new: self.cache.put_json({k: [s.logprob, list(s.token_logprobs)] for k, s in new.items()}),
            "scored",
            desc,
        )
        return [found[k] for k in keys]

    def _fill(
        self,
        keys: list[str],
        todo: list[int],
        found: dict[str, Any],
        compute: Callable[[list[int]], list[Any]],
        store: Callable[[dict[str, Any]], None],
        counter: str,
        desc: str,
    ) -> None:
        """Compute the `todo` requests' values in chunks of `CHUNK_BATCHES` x batch size, each stored (committed)
        before the next, so a kill loses at most one chunk; with a progress bar."""
        self.stats["cached"] += len(keys) - len(todo)
        chunk = max(self.engine.batch_size * CHUNK_BATCHES, 1)
        with progress_bar() as progress:
            task = progress.add_task(desc, total=len(keys), completed=len(keys) - len(todo))
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                new = {keys[i]: value for i, value in zip(part, compute(part), strict=True)}
                store(new)
                found.update(new)
                self.stats[counter] += len(part)
                progress.advance(task, len(part))


def answer_prompts(
    generator: Generator, prompts: Sequence[Prompt], params: SamplingSettings, desc: str = "answering"
) -> list[Response]:
    """Each prompt's answer from the generator's model, in the prompt's language (the generate stage)."""
    outputs = generator.generate([ChatRequest.user(p.instruction) for p in prompts], params, desc=desc)
    return [
        Response(id=p.id, lang=p.lang, prompt=p.instruction, output=out.strip())
        for p, out in zip(prompts, outputs, strict=True)
    ]
