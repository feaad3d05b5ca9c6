"""What every engine shares: chat requests, log-likelihoods, and the `Engine` protocol that HF, vLLM and
OpenAI-compatible servers implement (each registered in `polyrise.plugins.ENGINES`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from polyrise.errors import PolyriseError
from polyrise.settings import EngineSettings, ModelSettings, SamplingSettings


@dataclass(frozen=True)
class ChatRequest:
    """A chat to continue; `prefix` primes the assistant turn (e.g. "<translated>\\n")."""

    messages: tuple[dict[str, str], ...]
    prefix: str = ""

    @classmethod
    def user(cls, content: str, prefix: str = "") -> ChatRequest:
        return cls(({"role": "user", "content": content},), prefix)

    def with_system(self, content: str | None) -> ChatRequest:
        """This chat after a system turn of `content`; unchanged without one or when it opens with its own."""
        if content is None or (self.messages and self.messages[0]["role"] == "system"):
            return self
        return ChatRequest(({"role": "system", "content": content}, *self.messages), self.prefix)


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
    # optional: `tokenizer`, the local model's (hf, vllm, ray have one): the generator counts generated tokens with it

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

    @classmethod
    def from_settings(cls, settings: EngineSettings, model: ModelSettings | None = None) -> Engine:
        """The engine of a role's settings; `model`: the local model's spec and loading options (default:
        `settings.model` with default options), see `local_model`."""
        ...


def local_model(settings: EngineSettings, model: ModelSettings | None) -> ModelSettings:
    """The model a local engine (hf, vllm) loads: `model`, else the role's `model` spec with default options."""
    if model is not None:
        return model
    if settings.model is None:
        raise PolyriseError(f"engine {settings.engine!r} needs a model spec")
    return ModelSettings(spec=settings.model)


def check_fits(tokens: int, new_tokens: int, context: int | None, model: str, text: str) -> None:
    """A text of `tokens` tokens (+ `new_tokens` to generate) longer than the model's `context` (None: unknown) is
    one error naming the text, both lengths and the model, before any batch allocates for it (a 1 MB prompt would
    otherwise ask for tens of GB); the local engines (hf, vllm) check every request."""
    if context is not None and tokens + new_tokens > context:
        raise PolyriseError(
            f"a text of {tokens} tokens (+ {new_tokens} to generate) exceeds the context of {model!r} "
            f"({context} tokens); shorten it or lower max_new_tokens. It starts: {text[:80]!r}"
        )
