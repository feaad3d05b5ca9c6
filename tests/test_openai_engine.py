"""OpenAIEngine against a real HTTP server on 127.0.0.1 that speaks /v1/chat/completions."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from polyrise.config import SamplingSettings
from polyrise.errors import PolyriseError
from polyrise.generation import ChatRequest, Generator
from polyrise.generation.cache import GenerationCache
from polyrise.generation.openai import OpenAIEngine


class FakeServer(ThreadingHTTPServer):
    """Records every request; answers `echo:<last message content>` unless told to fail or misbehave."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.failures: list[int] = []  # statuses to answer with, one per request, before succeeding
        self.always: int | None = None  # a status every request gets
        self.raw_reply: bytes | None = None  # a 200 body to send instead of the echo
        self.delay: dict[str, float] = {}  # seconds to wait before answering a message content
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            status = srv.failures.pop(0) if srv.failures else srv.always
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            if self.path != "/v1/chat/completions":
                self._send(404, b'{"error": "not found"}')
                return
            content = body["messages"][-1]["content"]
            time.sleep(srv.delay.get(content, 0.0))
            if status is not None:
                self._send(status, b'{"error": "unavailable"}', {"Retry-After": "0"})
            elif srv.raw_reply is not None:
                self._send(200, srv.raw_reply)
            else:
                reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo:{content}"}}]}
                self._send(200, json.dumps(reply).encode())
        finally:
            with srv.lock:
                srv.in_flight -= 1


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def api_key(monkeypatch) -> str:
    monkeypatch.setenv("POLYRISE_TEST_KEY", "sk-test-123")
    return "sk-test-123"


def make(server: FakeServer, **kwargs: Any) -> OpenAIEngine:
    options: dict[str, Any] = {"api_key_env": "POLYRISE_TEST_KEY", "retry_backoff": 0.01, "timeout": 10}
    options.update(kwargs)
    return OpenAIEngine(server.base_url + "/", "test-model", **options)


def test_request_body_auth_and_params(server, api_key):
    engine = make(server)
    params = SamplingSettings(temperature=0.7, top_p=0.9, max_new_tokens=33, stop=["</x>"], seed=5)
    out = engine.complete([ChatRequest.user("hello")], params)
    assert out == ["echo:hello"]
    [req] = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {api_key}"
    assert req["body"] == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 33,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["</x>"],
        "seed": 5,
    }


def test_repetition_penalty_and_no_key(server):
    engine = make(server, api_key_env=None)
    engine.complete([ChatRequest.user("hi")], SamplingSettings(repetition_penalty=1.2))
    req = server.requests[0]
    assert "Authorization" not in req["headers"]
    assert req["body"]["repetition_penalty"] == 1.2
    assert "stop" not in req["body"]  # an empty stop list is not sent


def test_prefix_is_continued_final_assistant_message(server, api_key):
    engine = make(server)
    request = ChatRequest.user("Translate: hi", prefix="<translated>\n")
    engine.complete([request], SamplingSettings())
    body = server.requests[0]["body"]
    assert body["messages"] == [
        {"role": "user", "content": "Translate: hi"},
        {"role": "assistant", "content": "<translated>\n"},
    ]
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False
    assert "repetition_penalty" not in body


def test_client_side_stop_truncation(server, api_key):
    engine = make(server)
    assert engine.complete([ChatRequest.user("a</x>b")], SamplingSettings(stop=["</x>"])) == ["echo:a"]


def test_concurrent_requests_keep_order(server, api_key):
    # Earlier requests answer later, so responses arrive out of order; outputs must still be in request order.
    server.delay = {f"q{i}": 0.05 * (6 - i) for i in range(6)}
    engine = make(server, batch_size=3)
    requests = [ChatRequest.user(f"q{i}") for i in range(6)]
    assert engine.complete(requests, SamplingSettings()) == [f"echo:q{i}" for i in range(6)]
    assert 2 <= server.max_in_flight <= 3


def test_retries_503_then_succeeds(server, api_key):
    server.failures = [503, 429]
    engine = make(server, max_retries=3)
    assert engine.complete([ChatRequest.user("x")], SamplingSettings()) == ["echo:x"]
    assert len(server.requests) == 3


def test_persistent_failure_names_the_url(server, api_key):
    server.always = 500
    engine = make(server, max_retries=2)
    with pytest.raises(PolyriseError, match=r"127\.0\.0\.1:\d+/v1/chat/completions.*3 attempts.*HTTP 500"):
        engine.complete([ChatRequest.user("x")], SamplingSettings())
    assert len(server.requests) == 3


def test_client_error_is_not_retried(server, api_key):
    server.always = 400
    engine = make(server, max_retries=3)
    with pytest.raises(PolyriseError, match=r"HTTP 400.*prefill"):
        engine.complete([ChatRequest.user("x", prefix="p")], SamplingSettings())
    assert len(server.requests) == 1


def test_bad_json_is_a_clear_error(server, api_key):
    server.raw_reply = b"<html>oops</html>"
    with pytest.raises(PolyriseError, match=r"/v1/chat/completions: response is not valid JSON"):
        make(server).complete([ChatRequest.user("x")], SamplingSettings())
    server.raw_reply = b'{"choices": []}'
    with pytest.raises(PolyriseError, match="unexpected response"):
        make(server).complete([ChatRequest.user("x")], SamplingSettings())


def test_connection_refused_is_retried_then_reported(api_key):
    srv = FakeServer()  # bound, then closed: nothing listens on the port
    url = srv.base_url
    srv.server_close()
    engine = OpenAIEngine(url, "m", api_key_env="POLYRISE_TEST_KEY", max_retries=1, retry_backoff=0.01, timeout=5)
    with pytest.raises(PolyriseError, match=r"/v1/chat/completions: request failed after 2 attempts.*Connect"):
        engine.complete([ChatRequest.user("x")], SamplingSettings())


def test_missing_api_key_env_var(monkeypatch):
    monkeypatch.delenv("POLYRISE_MISSING_KEY", raising=False)
    with pytest.raises(PolyriseError, match="POLYRISE_MISSING_KEY"):
        OpenAIEngine("http://127.0.0.1:9/v1", "m", api_key_env="POLYRISE_MISSING_KEY")


def test_render_and_fingerprint(api_key):
    a = OpenAIEngine("http://h/v1", "m1", api_key_env="POLYRISE_TEST_KEY")
    b = OpenAIEngine("http://h/v1/", "m1", api_key_env="POLYRISE_TEST_KEY")
    c = OpenAIEngine("http://h/v1", "m2", api_key_env="POLYRISE_TEST_KEY")
    assert a.fingerprint == b.fingerprint != c.fingerprint
    r = ChatRequest.user("hé")
    assert json.loads(a.render(r)) == {"model": "m1", "messages": [{"role": "user", "content": "hé"}], "prefix": ""}
    assert a.render(r) != a.render(ChatRequest.user("hé", prefix="p")) != c.render(r)


def test_generator_cache_skips_http(server, api_key, tmp_path):
    gen = Generator(make(server, batch_size=2), GenerationCache(tmp_path / "cache.sqlite"))
    requests = [ChatRequest.user(f"q{i}") for i in range(5)]
    first = gen.generate(requests, SamplingSettings())
    assert first == [f"echo:q{i}" for i in range(5)] and len(server.requests) == 5
    again = Generator(make(server, batch_size=2), GenerationCache(tmp_path / "cache.sqlite"))
    assert again.generate(requests, SamplingSettings()) == first
    assert len(server.requests) == 5 and again.stats == {"cached": 5, "generated": 0}
