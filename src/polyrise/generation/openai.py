"""OpenAI-compatible chat engine over the `openai` SDK: vLLM's OpenAI server
(`python -m vllm.entrypoints.openai.api_server`), llama.cpp's server, TGI, OpenAI itself, or any server speaking
`POST {base_url}/chat/completions`.

The SDK does the HTTP work: timeouts, and retries with exponential backoff (honouring Retry-After) on 408, 409, 429,
5xx and connection errors. Requests run `max_concurrency` at a time on each server: with several `base_url`s (servers
of the same model, e.g. one vLLM server per GPU) they take their requests from one queue, so a faster server takes
more. The API key is read from a named environment variable and only handed to the clients: it is never part of a
cache key, a config dump or an error message.

Assistant prefixes (`ChatRequest.prefix`, used by self-translation) are sent as a final assistant message with vLLM's
extra fields `continue_final_message: true, add_generation_prompt: false`, so the server continues that message.
Plain OpenAI does not support prefill, so use such endpoints for requests without a prefix (answering, judging).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import openai
from pydantic import BaseModel

from polyrise.errors import PolyriseError
from polyrise.generation.base import ChatRequest, LogLikelihood
from polyrise.settings import EngineSettings, ModelSettings, OpenAISettings, SamplingSettings

T = TypeVar("T")
R = TypeVar("R")

NO_KEY = "EMPTY"
"""Sent when no key is configured (vLLM's convention for servers started without `--api-key`)."""


def _truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut at the earliest stop string (servers already do; this guards against ones that don't)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


@dataclass(frozen=True)
class _Server:
    """One server of the engine: its API root and its SDK client."""

    base_url: str
    client: openai.OpenAI


def _parallel(fn: Callable[[_Server, T], R], servers: Sequence[_Server], items: Sequence[T], workers: int) -> list[R]:
    """`fn(server, item)` of every item on up to `workers` daemon threads per server, all taking the next item from
    one queue; results in item order; the first error is raised and no new item starts. The threads are daemons and
    the wait polls, so Ctrl-C (or an error) returns at once: a request hung on a server dies with the process
    instead of holding its exit for timeout x retries."""
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(items)):
        todo.put(i)
    left, lock, finished = [len(items)], threading.Lock(), threading.Event()

    def work(server: _Server) -> None:
        while not finished.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[i] = fn(server, items[i])
            except BaseException as e:  # handed to the caller's thread
                errors.append(e)
                finished.set()
                return
            with lock:
                left[0] -= 1
                if not left[0]:
                    finished.set()

    for server in servers:
        for _ in range(min(workers, len(items))):
            threading.Thread(target=work, args=(server,), daemon=True).start()
    while items and not finished.wait(0.1):
        pass
    if errors:
        raise errors[0]
    return results


def _is_rendered_chat(text: str) -> bool:
    """Whether `text` is an `OpenAIEngine.render` (a chat as JSON), not text a model reads."""
    if not text.startswith('{"messages"'):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


class OpenAIEngine:
    """Engine over one or several OpenAI-compatible chat-completions servers of the same model."""

    @classmethod
    def from_settings(cls, settings: EngineSettings, model: ModelSettings | None = None) -> OpenAIEngine:
        """The `openai` section's server(s); `model` is the server's business."""
        assert settings.openai is not None  # EngineSettings requires it with engine openai
        return cls(settings.openai)

    def __init__(self, settings: OpenAISettings) -> None:
        self.settings = settings
        urls = [url.rstrip("/") for url in settings.base_urls]
        self.model = settings.model
        self.batch_size = settings.max_concurrency * len(urls)  # a generator chunk keeps every server busy
        self.where = ", ".join(urls)  # the servers, in messages
        # the first server names the model: adding or dropping the others keeps the cache
        self.fingerprint = hashlib.sha256(f"{urls[0]}\n{settings.model}".encode()).hexdigest()[:16]
        key = NO_KEY
        if settings.api_key_env is not None:
            key = os.environ.get(settings.api_key_env, "")
            if not key:
                raise PolyriseError(
                    f"environment variable {settings.api_key_env} is not set; it must hold the API key for "
                    f"{self.where} (for a server without authentication: api_key_env: null in a config, "
                    "--api-key-env '' on the command line)"
                )
        self._key = key
        self.servers = [
            _Server(
                url,
                openai.OpenAI(base_url=url, api_key=key, timeout=settings.timeout, max_retries=settings.max_retries),
            )
            for url in urls
        ]

    def _redact(self, message: str) -> str:
        """`message` without the API key's value (a server may echo the Authorization header back)."""
        return message.replace(self._key, "<redacted>") if self._key and self._key != NO_KEY else message

    def render(self, request: ChatRequest) -> str:
        """Canonical JSON of (model, messages, prefix): the cache key's prompt part (not text the model reads)."""
        return json.dumps(
            {"model": self.model, "messages": list(request.messages), "prefix": request.prefix},
            sort_keys=True,
            ensure_ascii=False,
        )

    def arguments(self, request: ChatRequest, params: SamplingSettings) -> dict[str, Any]:
        """Keyword arguments of `chat.completions.create` for one request."""
        messages = [dict(m) for m in request.messages]
        extra: dict[str, Any] = {}
        if params.repetition_penalty != 1.0:
            extra["repetition_penalty"] = params.repetition_penalty  # vLLM extra field
        if request.prefix:
            messages.append({"role": "assistant", "content": request.prefix})
            extra |= {"continue_final_message": True, "add_generation_prompt": False}  # vLLM extra fields
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        if params.stop:
            arguments["stop"] = list(params.stop)
        if extra:
            arguments["extra_body"] = extra
        return arguments

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        """Continuations after each request's prefix, in request order."""
        if not requests:
            return []
        arguments = [self.arguments(r, params) for r in requests]
        outputs = _parallel(self._chat, self.servers, arguments, self.settings.max_concurrency)
        return [_truncate_at_stop(text, params.stop) for text in outputs]

    def loglikelihood(self, requests: Sequence[tuple[str, str]], max_tokens: int | None = None) -> list[LogLikelihood]:
        """Continuation log-probs from the completions endpoint's prompt log-probs (`echo` + `logprobs`, as vLLM's
        server offers): the tokens from the context's end on, split as `encode_pair` splits. A server that does not
        return them is one error naming it; a chat context (from `render`) cannot be scored as text.

        The server tokenises the text: vLLM's completions endpoint adds the tokenizer's special tokens (its request
        field `add_special_tokens`, true by default; false on its chat endpoint), so a plain-text context gets one
        BOS, as `encode_text` gives it locally. Only a context whose text itself begins with the model's BOS string
        would get two, and polyrise does not know that string for a served model (docs/icr.md)."""
        if any(_is_rendered_chat(context) for context, _ in requests):
            raise PolyriseError(
                f"{self.where}: the openai engine cannot score a continuation of a chat (the server's chat "
                "template is not exposed as text); use a local engine (hf or vllm) for this task"
            )
        if not requests:
            return []
        score = partial(self._score, max_tokens=max_tokens)
        return _parallel(score, self.servers, list(requests), self.settings.max_concurrency)

    def _score(self, server: _Server, pair: tuple[str, str], max_tokens: int | None) -> LogLikelihood:
        context, continuation = pair
        arguments = {
            "model": self.model,
            "prompt": context + continuation,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 0,
        }
        try:
            completion = self._create(server, "completions", arguments)
        except PolyriseError as e:
            raise PolyriseError(
                f"scoring log-likelihoods through the openai engine needs the completions endpoint with prompt "
                f"log-probs (echo + logprobs, as vLLM's server offers): {e}"
            ) from None
        logprobs = completion.choices[0].logprobs
        offsets = getattr(logprobs, "text_offset", None) if logprobs else None
        values = getattr(logprobs, "token_logprobs", None) if logprobs else None
        if not offsets or not values:
            raise PolyriseError(
                f"{server.base_url}/completions (model {self.model!r}): the server returned no prompt log-probs "
                "(echo + logprobs); this task needs a server that offers them, such as vLLM's, or a local engine"
            )
        # split as `encode_pair` splits: the context's trailing spaces, and a token that crosses into the
        # continuation (" yes" after "The answer is "), belong to the continuation
        start, end = len(context.rstrip(" \t")), len(context + continuation)
        ends = [*offsets[1:], end]
        scored = [
            lp
            for off, stop, lp in zip(offsets, ends, values, strict=False)
            if (off >= start or stop > start) and off < end
        ]
        if any(lp is None for lp in scored) or not scored:
            raise PolyriseError(f"{server.base_url}/completions: no log-probs for the continuation {continuation!r}")
        scored = scored[:max_tokens] if max_tokens is not None else scored
        return LogLikelihood(sum(scored), tuple(scored))

    def _chat(self, server: _Server, arguments: dict[str, Any]) -> str:
        """One chat completion's text."""
        return self._create(server, "chat/completions", arguments).choices[0].message.content or ""

    def _create(self, server: _Server, endpoint: str, arguments: dict[str, Any]) -> Any:
        """One request to `endpoint` (`chat/completions` or `completions`) of `server`; SDK errors become one
        PolyriseError naming its URL and the model, with the API key's value redacted."""
        where = f"{server.base_url}/{endpoint} (model {self.model!r})"
        client = server.client
        create = client.chat.completions.create if endpoint == "chat/completions" else client.completions.create
        attempts = self.settings.max_retries + 1
        try:
            completion = create(**arguments)
        except openai.AuthenticationError as e:
            key = f"the key in ${self.settings.api_key_env}" if self.settings.api_key_env else "no key configured"
            message = f"HTTP 401, the server refused the API key ({key}): {e.message}"
        except openai.PermissionDeniedError as e:
            message = f"HTTP 403, this key may not use the model: {e.message}"
        except openai.NotFoundError as e:
            message = (
                f"HTTP 404, the server has no such model or route (its models: {server.base_url}/models): {e.message}"
            )
        except openai.BadRequestError as e:
            hint = ""
            if arguments.get("extra_body", {}).get("continue_final_message"):
                hint = " (the server may not support assistant prefill; vLLM does, plain OpenAI does not)"
            message = f"HTTP 400{hint}: {e.message}"
        except openai.APIStatusError as e:
            message = f"HTTP {e.status_code} after {attempts} attempts: {e.message}"
        except openai.APIConnectionError as e:  # includes timeouts
            message = f"{type(e).__name__} after {attempts} attempts (is the server running?): {e.message}"
        except openai.APIError as e:  # a 200 whose body is not a chat completion
            message = f"unexpected response ({type(e).__name__}): {e.message}"
        except ValueError as e:
            message = f"the response is not valid JSON ({e})"
        else:
            if not isinstance(completion, BaseModel):  # a 200 whose body is not JSON (an HTML page, ...)
                message = f"the response is not JSON: {str(completion)[:200]!r}"
            elif not getattr(completion, "choices", None):
                message = f"unexpected response, no choices: {completion.model_dump_json()[:300]}"
            else:
                return completion
        raise PolyriseError(self._redact(f"{where}: {message}")) from None
