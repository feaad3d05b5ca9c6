"""Test doubles: a scripted Engine (prompting, caching, extraction, scoring), a Llama with fixed logits, and a fake
OpenAI-compatible HTTP server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

from polyrise.generation import ChatRequest
from polyrise.settings import SamplingSettings


class ScriptedEngine:
    """Answers each request with the reply of the first key that occurs in its last user turn ("" otherwise)."""

    fingerprint = "scripted"
    batch_size = 2

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies
        self.seen: list[ChatRequest] = []
        self.calls: list[SamplingSettings] = []

    def render(self, request: ChatRequest) -> str:
        return "\n".join(f"<{m['role']}>{m['content']}" for m in request.messages) + "|" + request.prefix

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        self.seen.extend(requests)
        self.calls.append(params)
        return [next((v for k, v in self.replies.items() if k in r.messages[-1]["content"]), "") for r in requests]


def biased_llama(tokenizer, bias: dict[int, float], default: float = 0.0):
    """A 1-layer Llama whose logits ignore the input: an all-zero lm_head whose bias is `bias` (`default` elsewhere)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    head = torch.nn.Linear(16, len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(default)
        for token, value in bias.items():
            head.bias[token] = value
    model.lm_head = head
    return model


class FakeServer(ThreadingHTTPServer):
    """Records every request; answers `echo:<last message content>` unless told to fail or misbehave."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.failures: list[int] = []  # statuses to answer with, one per request, before succeeding
        self.always: int | None = None  # a status every request gets
        self.raw_reply: bytes | None = None  # a 200 body to send instead of the echo (on every endpoint)
        self.raw_type = "application/json"  # its Content-Type
        self.echo_auth = False  # answers repeat the Authorization header (as some servers' 401s do)
        self.fail_headers = {"retry-after-ms": "5"}  # the headers of a failure status
        self.trickle = 0.0  # seconds between the bytes of every 200 body (a server that trickles its answer)
        self.delay: dict[str, float] = {}  # seconds to wait before answering a message content
        self.hang = 0.0  # seconds every chat request waits (a server that does not answer)
        self.prompt_logprobs = False  # answer /v1/completions with echo log-probs (one token per character)
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def char_logprob(char: str) -> float:
    """The fake server's log-prob of a character (each character is one token)."""
    return -((ord(char) % 7) + 1) / 10


def _echo_completion(body: dict[str, Any]) -> dict[str, Any]:
    """A completions reply with the prompt's log-probs, as vLLM's server gives for `echo` + `logprobs`."""
    prompt = body["prompt"]
    logprobs = {
        "tokens": list(prompt),
        "token_logprobs": [None, *(char_logprob(c) for c in prompt[1:])],
        "text_offset": list(range(len(prompt))),
        "top_logprobs": None,
    }
    choice = {"index": 0, "text": "", "finish_reason": "length", "logprobs": logprobs}
    return {"id": "c", "object": "text_completion", "created": 0, "model": body["model"], "choices": [choice]}


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output quiet
        pass

    def _send(
        self, status: int, body: bytes, headers: dict[str, str] | None = None, kind: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self._leave()  # before the body: once it is read, the client may send its next request
        if status != 200 or not self.server.trickle:
            self.wfile.write(body)
            return
        for byte in body:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(self.server.trickle)

    def _leave(self) -> None:
        """This request is no longer in flight (once per request)."""
        if getattr(self, "_in_flight", False):
            self._in_flight = False
            with self.server.lock:
                self.server.in_flight -= 1

    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.requests.append(
                {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
            )
            status = srv.failures.pop(0) if srv.failures else srv.always
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        self._in_flight = True
        try:
            if status is None and srv.raw_reply is not None:
                self._send(200, srv.raw_reply, kind=srv.raw_type)
                return
            if self.path == "/v1/completions" and srv.prompt_logprobs:
                self._send(200, json.dumps(_echo_completion(body)).encode())
                return
            if self.path != "/v1/chat/completions":
                self._send(404, b'{"error": "not found"}')
                return
            content = body["messages"][-1]["content"]
            time.sleep(max(srv.delay.get(content, 0.0), srv.hang))
            if status is not None:
                said = f"unavailable for {self.headers['Authorization']}" if srv.echo_auth else "unavailable"
                self._send(status, json.dumps({"error": {"message": said}}).encode(), srv.fail_headers)
            else:
                answer = f"echo:{content}" + (f" (you sent {self.headers['Authorization']})" if srv.echo_auth else "")
                reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}
                self._send(200, json.dumps(reply).encode())
        finally:
            self._leave()


class LocalScorer:
    """An HF engine over an in-memory model and tokenizer (no model dir): scoring and constrained decoding in
    unit tests."""

    def __new__(cls, model, tokenizer, batch_size: int = 16):
        from polyrise.generation.hf import HFEngine

        engine = HFEngine.__new__(HFEngine)
        engine.model, engine.tokenizer, engine.batch_size = model, tokenizer, batch_size
        engine.fingerprint = f"in-memory-{id(model)}"
        engine.eos_ids = {tokenizer.eos_token_id} - {None}
        engine.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        engine.context = getattr(model.config, "max_position_embeddings", None)
        engine.resolved = SimpleNamespace(spec="in-memory")  # what a context error names
        engine.threads = None  # tests keep torch's thread count
        return engine


def scorer(model, tokenizer, batch_size: int = 16):
    """A Generator (fresh cache) over `LocalScorer`."""
    import tempfile
    from pathlib import Path

    from polyrise.generation import Generator
    from polyrise.generation.cache import GenerationCache

    cache = GenerationCache(Path(tempfile.mkdtemp(prefix="polyrise-scorer-")) / "cache.sqlite")
    return Generator(LocalScorer(model, tokenizer, batch_size), cache)
