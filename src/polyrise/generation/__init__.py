"""Generation: the Engine protocol, chat requests, and cached generation over any engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from polyrise.console import progress as progress_bar
from polyrise.errors import PolyriseError
from polyrise.generation.cache import GenerationCache
from polyrise.records import Prompt, Response
from polyrise.settings import EngineSettings, ModelSettings, SamplingSettings


@dataclass(frozen=True)
class ChatRequest:
    """A chat to continue; `prefix` primes the assistant turn (e.g. "<translated>\\n")."""

    messages: tuple[dict[str, str], ...]
    prefix: str = ""

    @classmethod
    def user(cls, content: str, prefix: str = "") -> ChatRequest:
        return cls(({"role": "user", "content": content},), prefix)


def render_chat(tokenizer: Any, request: ChatRequest) -> str:
    """The prompt text a local engine feeds its model: the chat template with the generation prompt, then the prefix."""
    text: str = tokenizer.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True)
    return text + request.prefix


@dataclass(frozen=True)
class LogLikelihood:
    """How likely a continuation is after its context: the summed log-prob and each token's."""

    logprob: float
    token_logprobs: tuple[float, ...]

    @property
    def tokens(self) -> int:
        return len(self.token_logprobs)


class Engine(Protocol):
    """What every engine (HF, vLLM, OpenAI-compatible) provides."""

    fingerprint: str
    """Identity of the weights; part of every cache key."""
    batch_size: int

    def render(self, request: ChatRequest) -> str:
        """The exact text the model sees (the cache key's prompt part)."""
        ...

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        """Continuations after each request's prefix, in request order."""
        ...

    def loglikelihood(self, requests: Sequence[tuple[str, str]], max_tokens: int | None = None) -> list[LogLikelihood]:
        """Log-probs of each (context, continuation) text's continuation tokens (the first `max_tokens` of them
        when given), in request order. The context is exact text: render a chat with `render` first."""
        ...


def open_engine(settings: EngineSettings, model: ModelSettings | None = None) -> Engine:
    """The engine a role's settings name. `model` gives the local model's spec and loading options (default:
    `settings.model` with default options); the `openai` engine ignores it."""
    if settings.engine == "openai":
        from polyrise.generation.openai import OpenAIEngine

        assert settings.openai is not None
        return OpenAIEngine(settings.openai)
    from polyrise.models import resolve_model

    if model is None:
        if settings.model is None:
            raise PolyriseError(f"engine {settings.engine!r} needs a model spec")
        model = ModelSettings(spec=settings.model)
    if settings.engine == "vllm":
        from polyrise.generation.vllm import VLLMEngine

        return VLLMEngine(resolve_model(model.spec), model, settings.vllm, batch_size=settings.batch_size)
    from polyrise.generation.hf import HFEngine

    return HFEngine(resolve_model(model.spec), model, batch_size=settings.batch_size)


@dataclass
class Generator:
    """Runs an engine through a persistent cache, so a killed or repeated stage never regenerates."""

    engine: Engine
    cache: GenerationCache
    stats: dict[str, int] = field(default_factory=lambda: {"cached": 0, "generated": 0, "scored": 0})

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingSettings, desc: str = "generating"
    ) -> list[str]:
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
        return [found[k] for k in keys]

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
        """Compute the `todo` requests' values in chunks of 4 x batch size, each stored (committed) before the
        next, so a kill loses at most one chunk; with a progress bar."""
        self.stats["cached"] += len(keys) - len(todo)
        chunk = max(self.engine.batch_size * 4, 1)
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
