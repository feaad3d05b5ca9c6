"""OpenAI-compatible chat engine over the `openai` SDK: vLLM's OpenAI server
(`python -m vllm.entrypoints.openai.api_server`), llama.cpp's server, TGI, OpenAI itself, or any server speaking
`POST {base_url}/chat/completions`.

The SDK does the HTTP work; polyrise bounds it and checks what comes back. Every attempt of a request has
`timeout` seconds of wall-clock time for the whole answer, however slowly its bytes arrive, and at most
`MAX_RESPONSE_BYTES`; failed attempts are retried with exponential backoff (honouring Retry-After, and failing at once
when it asks for longer than `timeout`) on 408, 409, 429, 5xx, connection errors and timeouts, and an error says how
many attempts were made. An answer must hold exactly one choice (polyrise asks for one), a chat answer a text (a
`content: null` is an error, so nothing is cached for it), a scored one finite log-probs <= 0. Requests run
`max_concurrency` at a time on each server: with several `base_url`s (servers of the same model, e.g. one vLLM server
per GPU) they take their requests from one queue, so a faster server takes more. The API key is read from a named
environment variable (surrounding whitespace stripped) and only handed to the clients: it is never part of a cache
key, a config dump or an error message, and is redacted from every answer before it is stored.

Assistant prefixes (`ChatRequest.prefix`, used by self-translation) are sent as a final assistant message with vLLM's
extra fields `continue_final_message: true, add_generation_prompt: false`, so the server continues that message.
Plain OpenAI does not support prefill, so use such endpoints for requests without a prefix (answering, judging).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import openai

from polyrise.errors import PolyriseError
from polyrise.generation.base import ChatRequest, LogLikelihood
from polyrise.settings import EngineSettings, ModelSettings, OpenAISettings, SamplingSettings

T = TypeVar("T")
R = TypeVar("R")

NO_KEY = "EMPTY"
"""Sent when no key is configured (vLLM's convention for servers started without `--api-key`)."""
MAX_RESPONSE_BYTES = 16 * 2**20
"""The largest answer body read (a one-choice answer, or a long prompt's echoed log-probs, is far smaller)."""
RETRIED_STATUSES = frozenset({408, 409, 429})
"""HTTP statuses retried besides 5xx (the SDK's choice)."""
LOGPROB_SLACK = 1e-6
"""How far above 0 a server's log-prob may round (log_softmax of a near-certain token) and still be accepted."""


class _BadAnswer(Exception):
    """A 200 answer polyrise cannot use (its message says why); never retried."""


def _within(seconds: float, fn: Callable[[], R]) -> R:
    """`fn()` on a daemon thread, given `seconds` of wall-clock time: past them a TimeoutError, the thread left to
    die with the process (an SDK timeout bounds each read, not a server that trickles its bytes)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the waiting thread
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no complete answer within the timeout ({seconds:g} s)")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _retry_after(error: Exception) -> float | None:
    """The seconds a 408/409/429/5xx answer asks to wait (Retry-After-Ms, Retry-After in seconds or as a date);
    None where it asks nothing a number can say."""
    headers = error.response.headers if isinstance(error, openai.APIStatusError) else {}
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            seconds = float(ms) / 1000
        elif (value := headers.get("retry-after")) is None:
            return None
        else:
            try:
                seconds = float(value)
            except ValueError:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (ValueError, TypeError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) else None


def _retryable(error: Exception) -> bool:
    if isinstance(error, openai.APIStatusError):
        return error.status_code in RETRIED_STATUSES or error.status_code >= 500
    return isinstance(error, (openai.APIConnectionError, TimeoutError))


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
            key = os.environ.get(settings.api_key_env, "").strip()  # a key pasted with its line end
            if not key:
                raise PolyriseError(
                    f"environment variable {settings.api_key_env} is not set; it must hold the API key for "
                    f"{self.where} (for a server without authentication: api_key_env: null in a config, "
                    "--api-key-env '' on the command line)"
                )
            if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
                raise PolyriseError(
                    f"environment variable {settings.api_key_env} holds spaces, control or non-ASCII characters "
                    "inside its value, which no API key has (it goes into an HTTP header); check how it was set"
                )
        self._key = key
        # polyrise retries (`_create`): it knows the attempts made and bounds each one
        self.servers = [
            _Server(url, openai.OpenAI(base_url=url, api_key=key, timeout=settings.timeout, max_retries=0))
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
            choice = self._create(server, "completions", arguments)
        except PolyriseError as e:
            raise PolyriseError(
                f"scoring log-likelihoods through the openai engine needs the completions endpoint with prompt "
                f"log-probs (echo + logprobs, as vLLM's server offers): {e}"
            ) from None
        where = f"{server.base_url}/completions (model {self.model!r})"
        logprobs = choice.get("logprobs")
        offsets = logprobs.get("text_offset") if isinstance(logprobs, dict) else None
        values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
        if not offsets or not values:
            raise PolyriseError(
                f"{where}: the server returned no prompt log-probs (echo + logprobs); this task needs a server that "
                "offers them, such as vLLM's, or a local engine"
            )
        request = f"scoring {continuation[:80]!r} after {context[-80:]!r}"
        if (
            not isinstance(offsets, list)
            or not isinstance(values, list)
            or len(offsets) != len(values)
            or not all(type(off) is int for off in offsets)
        ):
            raise PolyriseError(f"{where}: malformed prompt log-probs (text_offset, token_logprobs) {request}")
        # split as `encode_pair` splits: the context's trailing spaces, and a token that crosses into the
        # continuation (" yes" after "The answer is "), belong to the continuation
        start, end = len(context.rstrip(" \t")), len(context + continuation)
        ends = [*offsets[1:], end]
        scored = [
            lp
            for off, stop, lp in zip(offsets, ends, values, strict=True)
            if (off >= start or stop > start) and off < end
        ]
        if any(lp is None for lp in scored) or not scored:
            raise PolyriseError(f"{where}: no log-probs for the continuation {continuation!r}")
        bad = [lp for lp in scored if type(lp) not in (int, float) or not math.isfinite(lp) or lp > LOGPROB_SLACK]
        if bad:
            raise PolyriseError(
                f"{where}: the server returned the log-prob {bad[0]!r} {request}; a log-prob is a finite number <= 0"
            )
        scored = scored[:max_tokens] if max_tokens is not None else scored
        return LogLikelihood(sum(scored), tuple(scored))

    def _chat(self, server: _Server, arguments: dict[str, Any]) -> str:
        """One chat completion's text, the API key's value redacted (a server may echo it)."""
        choice = self._create(server, "chat/completions", arguments)
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise PolyriseError(
                f"{server.base_url}/chat/completions (model {self.model!r}): the server returned no answer text "
                f"(content {json.dumps(content)[:80]}, finish_reason {choice.get('finish_reason')!r}) for "
                f"{json.dumps(arguments['messages'], ensure_ascii=False)[:200]}"
            )
        return self._redact(content)

    def _request(self, server: _Server, endpoint: str, arguments: dict[str, Any]) -> Any:
        """One HTTP attempt: its JSON body, read up to `MAX_RESPONSE_BYTES`."""
        client = server.client
        resource = client.chat.completions if endpoint == "chat/completions" else client.completions
        body = bytearray()
        with resource.with_streaming_response.create(**arguments) as response:
            kind = response.headers.get("content-type", "")
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise _BadAnswer(f"the response exceeds {MAX_RESPONSE_BYTES // 2**20} MiB")
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as e:
            if "json" in kind:
                raise _BadAnswer(f"the response is not valid JSON ({str(e)[:200]})") from None
            raise _BadAnswer(f"the response is not JSON: {body[:200].decode(errors='replace')!r}") from None

    def _create(self, server: _Server, endpoint: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The one choice of a request to `endpoint` (`chat/completions` or `completions`) of `server`, with up to
        `max_retries` retries; every failure is one PolyriseError naming its URL, the model and the attempts made,
        with the API key's value redacted."""
        where = f"{server.base_url}/{endpoint} (model {self.model!r})"
        timeout, attempts = self.settings.timeout, self.settings.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                body = _within(timeout, partial(self._request, server, endpoint, arguments))
                choice = self._choice(body)
            except _BadAnswer as e:
                message = str(e)
            except (openai.APIStatusError, openai.APIConnectionError, TimeoutError) as e:
                wait, retry = _retry_after(e), _retryable(e) and attempt < attempts
                if retry and (wait is None or wait <= timeout):
                    time.sleep(self._backoff(attempt) if wait is None else max(wait, 0.0))
                    continue
                message = self._failure(e, server, arguments, attempt)
                if retry:  # only a Retry-After beyond the timeout stops a retryable failure early
                    message += f"; the server asks to retry after {wait:g} s, longer than the timeout ({timeout:g} s)"
            except openai.APIError as e:
                message = f"unexpected response ({type(e).__name__}): {e.message}"
            else:
                return choice
            break
        raise PolyriseError(self._redact(f"{where}: {message}")) from None

    @staticmethod
    def _backoff(attempt: int) -> float:
        """Seconds before attempt `attempt + 1`: 0.5 s doubling up to 8 s, less up to 25% jitter (the SDK's)."""
        return min(0.5 * 2.0 ** (attempt - 1), 8.0) * (1 - 0.25 * random.random())

    @staticmethod
    def _choice(body: Any) -> dict[str, Any]:
        """The one choice of an answer; none, several (polyrise asks for one) or a malformed one is a `_BadAnswer`."""
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise _BadAnswer(f"unexpected response, no choices: {json.dumps(body)[:300]}")
        if len(choices) > 1:
            raise _BadAnswer(f"the server returned {len(choices)} choices; polyrise asks for one")
        return choices[0]

    def _failure(self, error: Exception, server: _Server, arguments: dict[str, Any], attempt: int) -> str:
        """What went wrong with the last attempt of a request, in words."""
        made = f"{attempt} attempt{'s' if attempt != 1 else ''}"
        if isinstance(error, openai.AuthenticationError):
            key = f"the key in ${self.settings.api_key_env}" if self.settings.api_key_env else "no key configured"
            return f"HTTP 401, the server refused the API key ({key}): {error.message}"
        if isinstance(error, openai.PermissionDeniedError):
            return f"HTTP 403, this key may not use the model: {error.message}"
        if isinstance(error, openai.NotFoundError):
            return (
                f"HTTP 404, the server has no such model or route (its models: {server.base_url}/models): "
                f"{error.message}"
            )
        if isinstance(error, openai.BadRequestError):
            hint = ""
            if arguments.get("extra_body", {}).get("continue_final_message"):
                hint = " (the server may not support assistant prefill; vLLM does, plain OpenAI does not)"
            return f"HTTP 400{hint}: {error.message}"
        if isinstance(error, openai.APIStatusError):
            return f"HTTP {error.status_code} after {made}: {error.message}"
        if isinstance(error, TimeoutError):  # polyrise's wall clock, named as the SDK names its read timeouts
            return f"APITimeoutError after {made}: {error}"
        assert isinstance(error, openai.APIConnectionError)  # includes the SDK's read timeouts
        return f"{type(error).__name__} after {made} (is the server running?): {error.message}"
