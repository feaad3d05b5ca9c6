"""OpenAI-compatible chat engine: vLLM's OpenAI server (`python -m vllm.entrypoints.openai.api_server`),
OpenAI itself, or any server speaking `POST {base_url}/chat/completions`.

Assistant prefixes (`ChatRequest.prefix`, used by self-translation) are sent as a final assistant message
with vLLM's extra fields `continue_final_message: true, add_generation_prompt: false`, so the server
continues that message. Plain OpenAI does not support prefill: it rejects those fields or answers a fresh
turn, so use an OpenAI endpoint only for requests without a prefix (answering, judging).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    import httpx
except ImportError:  # pragma: no cover - huggingface_hub ships the API-compatible fork instead
    import httpx2 as httpx  # type: ignore[no-redef]

from polyrise.config import SamplingSettings
from polyrise.errors import PolyriseError
from polyrise.generation import ChatRequest

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Statuses worth retrying (rate limits, overload, restarts); every other 5xx is retried too."""


def _truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut at the earliest stop string (servers already do; this guards against ones that don't)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def _seconds(retry_after: str | None) -> float | None:
    """A numeric Retry-After header in seconds (capped at a minute); None when absent or a date."""
    try:
        return min(max(float(retry_after), 0.0), 60.0) if retry_after else None
    except ValueError:
        return None


class OpenAIEngine:
    """Engine over an OpenAI-compatible chat-completions server; `batch_size` requests run concurrently."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        batch_size: int = 8,
        timeout: float = 120,
        max_retries: int = 3,
        *,
        retry_backoff: float = 1.0,
    ) -> None:
        """`base_url` is the API root (e.g. `http://localhost:8000/v1`); the key is read from the
        environment variable `api_key_env` (None: send no key, as for a local vLLM server)."""
        if batch_size < 1:
            raise PolyriseError(f"batch_size must be at least 1, got {batch_size}")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.retry_backoff = retry_backoff
        self.fingerprint = hashlib.sha256(f"{self.base_url}\n{model}".encode()).hexdigest()[:16]
        self._headers = {"Content-Type": "application/json"}
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key:
                raise PolyriseError(
                    f"environment variable {api_key_env} is not set; it must hold the API key for {self.base_url} "
                    "(pass api_key_env=None for a server without authentication)"
                )
            self._headers["Authorization"] = f"Bearer {key}"

    def render(self, request: ChatRequest) -> str:
        """Canonical JSON of (model, messages, prefix): the cache key's prompt part."""
        return json.dumps(
            {"model": self.model, "messages": list(request.messages), "prefix": request.prefix},
            sort_keys=True,
            ensure_ascii=False,
        )

    def body(self, request: ChatRequest, params: SamplingSettings) -> dict[str, Any]:
        """The JSON body POSTed for one request."""
        messages = [dict(m) for m in request.messages]
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty  # vLLM extra field
        if request.prefix:
            messages.append({"role": "assistant", "content": request.prefix})
            body["continue_final_message"] = True  # vLLM extra fields: continue the assistant prefix
            body["add_generation_prompt"] = False
        return body

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        """Continuations after each request's prefix, in request order."""
        if not requests:
            return []
        bodies = [self.body(r, params) for r in requests]
        with (
            httpx.Client(timeout=httpx.Timeout(self.timeout), headers=self._headers) as client,
            ThreadPoolExecutor(max_workers=min(self.batch_size, len(bodies))) as pool,
        ):
            futures = [pool.submit(self._post, client, body) for body in bodies]
            try:
                outputs = [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return [_truncate_at_stop(text, params.stop) for text in outputs]

    def _post(self, client: httpx.Client, body: dict[str, Any]) -> str:
        """One chat completion, retried with exponential backoff on 429/5xx and connection errors."""
        problem, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(retry_after if retry_after is not None else self.retry_backoff * 2 ** (attempt - 1))
            try:
                response = client.post(self.url, json=body)
            except httpx.TransportError as e:
                problem, retry_after = f"{type(e).__name__}: {e}", None
                continue
            if response.status_code in RETRY_STATUS or response.status_code >= 500:
                problem = f"HTTP {response.status_code}: {response.text[:300]}"
                retry_after = _seconds(response.headers.get("retry-after"))
                continue
            if response.status_code != 200:
                hint = ""
                if response.status_code in (401, 403):
                    hint = " (check the API key)"
                elif response.status_code == 400 and body.get("continue_final_message"):
                    hint = " (the server may not support assistant prefill; vLLM does, plain OpenAI does not)"
                raise PolyriseError(f"{self.url}: HTTP {response.status_code}{hint}: {response.text[:500]}")
            return self._content(response)
        raise PolyriseError(f"{self.url}: request failed after {self.max_retries + 1} attempts; last error: {problem}")

    def _content(self, response: httpx.Response) -> str:
        try:
            data = response.json()
        except ValueError:
            raise PolyriseError(f"{self.url}: response is not valid JSON: {response.text[:300]!r}") from None
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise PolyriseError(
                f"{self.url}: unexpected response, no choices[0].message.content: {json.dumps(data)[:300]}"
            ) from None
        if content is not None and not isinstance(content, str):
            raise PolyriseError(f"{self.url}: choices[0].message.content is not a string: {content!r:.200}")
        return content or ""
