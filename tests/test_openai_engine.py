"""OpenAIEngine against a real HTTP server on 127.0.0.1 that speaks /v1/chat/completions."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from engines import FakeServer, char_logprob
from typer.testing import CliRunner

from polyrise.cli import app
from polyrise.errors import PolyriseError
from polyrise.generation import ChatRequest, Generator
from polyrise.generation.cache import GenerationCache
from polyrise.generation.openai import OpenAIEngine
from polyrise.settings import OpenAISettings, SamplingSettings


@pytest.fixture
def api_key(monkeypatch) -> str:
    monkeypatch.setenv("POLYRISE_TEST_KEY", "sk-test-123")
    return "sk-test-123"


@pytest.fixture
def second_server() -> Iterator[FakeServer]:
    """Another fake server, beside the `server` fixture's."""
    srv = FakeServer()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def make(server: FakeServer, **kwargs: Any) -> OpenAIEngine:
    return OpenAIEngine(settings(server.base_url + "/", **kwargs))


def settings(base_url: str, model: str = "test-model", **kwargs: Any) -> OpenAISettings:
    options: dict[str, Any] = {"api_key_env": "POLYRISE_TEST_KEY", "timeout": 10, "max_retries": 2}
    return OpenAISettings(base_url=base_url, model=model, **(options | kwargs))


def test_request_body_auth_and_params(server, api_key):
    engine = make(server)
    params = SamplingSettings(temperature=0.7, top_p=0.9, max_new_tokens=33, stop=["</x>"], seed=5)
    out = engine.complete([ChatRequest.user("hello")], params)
    assert out == ["echo:hello"]
    [req] = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["authorization"] == f"Bearer {api_key}"
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
    assert req["headers"]["authorization"] == "Bearer EMPTY"  # vLLM's convention for a server without --api-key
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
    engine = make(server, max_concurrency=3)
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
    with pytest.raises(
        PolyriseError, match=r"127\.0\.0\.1:\d+/v1/chat/completions \(model 'test-model'\): HTTP 500 after 3 attempts"
    ):
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
    with pytest.raises(
        PolyriseError, match=r"/v1/chat/completions \(model 'test-model'\): the response is not valid JSON"
    ):
        make(server).complete([ChatRequest.user("x")], SamplingSettings())
    server.raw_reply = b'{"choices": []}'
    with pytest.raises(PolyriseError, match="unexpected response"):
        make(server).complete([ChatRequest.user("x")], SamplingSettings())
    server.raw_reply, server.raw_type = b"<html><body>Gateway says hi</body></html>", "text/html"  # a 200 page
    with pytest.raises(PolyriseError, match=r"\(model 'test-model'\): the response is not JSON: '<html>"):
        make(server).complete([ChatRequest.user("x")], SamplingSettings())


@pytest.mark.parametrize("status", [401, 403, 500])
def test_a_key_the_server_echoes_back_is_never_printed(server, api_key, status):
    server.always, server.echo_auth = status, True
    with pytest.raises(PolyriseError) as error:
        make(server, max_retries=0).complete([ChatRequest.user("x")], SamplingSettings())
    assert api_key not in str(error.value) and "Bearer <redacted>" in str(error.value)


@pytest.mark.parametrize("url", ["not a url", "localhost:8000/v1", "ftp://host/v1", "http://"])
def test_a_base_url_that_is_not_http_is_refused_before_any_request(url):
    with pytest.raises(ValueError, match="is not an http\\(s\\) URL with a host"):
        settings(url)


def test_connection_refused_is_retried_then_reported(api_key):
    srv = FakeServer()  # bound, then closed: nothing listens on the port
    url = srv.base_url
    srv.server_close()
    engine = OpenAIEngine(settings(url, "m", max_retries=1, timeout=5))
    with pytest.raises(PolyriseError, match=r"/v1/chat/completions \(model 'm'\): APIConnectionError after 2 attempts"):
        engine.complete([ChatRequest.user("x")], SamplingSettings())


def test_missing_api_key_env_var(monkeypatch):
    monkeypatch.delenv("POLYRISE_MISSING_KEY", raising=False)
    with pytest.raises(PolyriseError, match="POLYRISE_MISSING_KEY"):
        OpenAIEngine(settings("http://127.0.0.1:9/v1", "m", api_key_env="POLYRISE_MISSING_KEY"))


def test_render_and_fingerprint(api_key):
    a = OpenAIEngine(settings("http://h/v1", "m1"))
    b = OpenAIEngine(settings("http://h/v1/", "m1"))
    c = OpenAIEngine(settings("http://h/v1", "m2"))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    r = ChatRequest.user("hé")
    assert json.loads(a.render(r)) == {"model": "m1", "messages": [{"role": "user", "content": "hé"}], "prefix": ""}
    assert a.render(r) != a.render(ChatRequest.user("hé", prefix="p")) != c.render(r)


def test_generator_cache_skips_http(server, api_key, tmp_path):
    gen = Generator(make(server, max_concurrency=2), GenerationCache(tmp_path / "cache.sqlite"))
    requests = [ChatRequest.user(f"q{i}") for i in range(5)]
    first = gen.generate(requests, SamplingSettings())
    assert first == [f"echo:q{i}" for i in range(5)] and len(server.requests) == 5
    again = Generator(make(server, max_concurrency=2), GenerationCache(tmp_path / "cache.sqlite"))
    assert again.generate(requests, SamplingSettings()) == first
    assert len(server.requests) == 5 and again.stats == {"cached": 5, "generated": 0, "scored": 0, "tokens": 0}


@pytest.mark.parametrize(
    ("status", "says"),
    [(401, "HTTP 401, the server refused the API key"), (404, "HTTP 404, the server has no such model")],
)
def test_auth_and_missing_model_are_clear_and_not_retried(server, api_key, status, says):
    server.always = status
    with pytest.raises(PolyriseError) as info:
        make(server, max_retries=3).complete([ChatRequest.user("x")], SamplingSettings())
    message = str(info.value)
    assert f"{server.base_url}/chat/completions (model 'test-model'): {says}" in message
    assert api_key not in message  # the key is never echoed
    assert len(server.requests) == 1


def test_loglikelihood_through_echo_logprobs_and_a_clear_error_without_them(server, tmp_path):
    from engines import char_logprob
    from typer.testing import CliRunner

    from polyrise.cli import app

    engine = make(server, api_key_env=None)
    server.prompt_logprobs = True
    [scored] = engine.loglikelihood([("The sky is", " blue")])
    assert scored.token_logprobs == tuple(char_logprob(c) for c in " blue")
    assert scored.logprob == pytest.approx(sum(char_logprob(c) for c in " blue"))
    assert engine.loglikelihood([("The sky is", " blue")], max_tokens=2)[0].tokens == 2
    # split as the HF engine splits: the context's trailing space is scored with the continuation
    [spaced] = engine.loglikelihood([("The answer is ", "yes")])
    assert spaced.token_logprobs == tuple(char_logprob(c) for c in " yes")

    rows = [{"id": "1", "context": "The sky is", "choices": [" blue", " gray"], "label": 0}]
    data = tmp_path / "choice_en.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", "--task", "choice", "--source", str(tmp_path / "choice_{lang}.jsonl"), "--langs", "en"]
    args += ["--engine", "openai", "--base-url", server.base_url, "--model", "m", "--api-key-env", ""]
    args += ["--normalize", "none", "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [pred] = [json.loads(line) for line in (tmp_path / "out" / "choice_model.jsonl").read_text().splitlines()]
    expected = [sum(char_logprob(c) for c in choice) for choice in (" blue", " gray")]
    assert pred["logliks"] == pytest.approx(expected) and pred["pred"] == expected.index(max(expected))

    server.prompt_logprobs = False  # a chat-only server: /v1/completions is a 404
    bad = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "out2")])
    assert bad.exit_code == 1 and "needs the completions endpoint with prompt log-probs" in str(bad.exception)
    assert "HTTP 404" in str(bad.exception)


def test_classify_and_reflik_through_the_openai_engine_score_or_say_why_not(server, tmp_path):
    """classify by log-likelihood scores through echo log-probs; constrained decoding, reflik (a chat context) and a
    server without prompt log-probs are each one clear error."""
    from engines import char_logprob

    from polyrise.evaluation.fewshot import ClassifyItem, classify
    from polyrise.evaluation.reflik import reference_nll
    from polyrise.records import Response

    generator = Generator(make(server, api_key_env=None), GenerationCache(tmp_path / "c.sqlite"))
    items = [ClassifyItem(id=str(i), lang="en", text=f"review {i}", label=["good", "bad"][i % 2]) for i in range(4)]
    server.prompt_logprobs = True
    preds = classify(generator, items, ["good", "bad"], k=1, seed=3)
    for pred in preds:
        assert pred.scores == pytest.approx({label: sum(map(char_logprob, " " + label)) for label in ("good", "bad")})
    assert {pred.pred for pred in preds} == {"bad"}  # the fake server's per-character log-probs favour " bad"
    assert all(r["path"] == "/v1/completions" and r["body"]["echo"] for r in server.requests)

    with pytest.raises(PolyriseError, match=r"needs a local \(hf\) engine, not OpenAIEngine \(use constrain: loglik\)"):
        classify(generator, items, ["good", "bad"], constrain="generate")
    with pytest.raises(PolyriseError, match="cannot score a continuation of a chat"):
        reference_nll(generator, [Response(id="1", lang="en", prompt="Say hi.", output="Hi!")], 8)

    server.prompt_logprobs = False  # a chat-only server
    fresh = Generator(make(server, api_key_env=None), GenerationCache(tmp_path / "d.sqlite"))
    with pytest.raises(PolyriseError, match=f"{server.base_url}/completions .*HTTP 404") as info:
        classify(fresh, items, ["good", "bad"])
    assert "needs the completions endpoint with prompt log-probs" in str(info.value)


def test_requests_are_spread_over_several_servers_in_order_and_cached_whichever_answered(
    server, second_server, tmp_path
):
    both = [server.base_url, second_server.base_url + "/"]
    for srv in (server, second_server):
        srv.delay = {f"q{i}": 0.05 for i in range(8)}
    engine = OpenAIEngine(settings(both, api_key_env=None, max_concurrency=2))
    assert engine.batch_size == 4  # a generator chunk keeps both servers' slots busy
    requests = [ChatRequest.user(f"q{i}") for i in range(8)]
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    assert gen.generate(requests, SamplingSettings()) == [f"echo:q{i}" for i in range(8)]
    asked = [[r["body"]["messages"][0]["content"] for r in srv.requests] for srv in (server, second_server)]
    assert sorted(asked[0] + asked[1]) == sorted(f"q{i}" for i in range(8)) and all(asked)
    assert server.max_in_flight <= 2 and second_server.max_in_flight <= 2

    # the first server names the model: the same cache with it alone (or with others) asks nothing again
    alone = OpenAIEngine(settings(server.base_url, api_key_env=None))
    assert alone.fingerprint == engine.fingerprint != OpenAIEngine(settings(both[::-1], api_key_env=None)).fingerprint
    again = Generator(alone, GenerationCache(tmp_path / "c.sqlite"))
    assert again.generate(requests, SamplingSettings()) == [f"echo:q{i}" for i in range(8)]
    assert again.stats["generated"] == 0 and len(server.requests) + len(second_server.requests) == 8


def test_a_failing_server_among_several_is_named(server, second_server):
    server.delay = {f"q{i}": 0.2 for i in range(4)}  # the healthy one is slow, so the failing one takes requests
    second_server.always = 500
    engine = OpenAIEngine(
        settings([server.base_url, second_server.base_url], api_key_env=None, max_retries=0, max_concurrency=1)
    )
    with pytest.raises(PolyriseError) as info:
        engine.complete([ChatRequest.user(f"q{i}") for i in range(4)], SamplingSettings())
    assert str(info.value).startswith(f"{second_server.base_url}/chat/completions (model 'test-model'): HTTP 500")


def test_several_base_urls_from_a_config_list_or_a_comma_separated_option(server, second_server, tmp_path):
    from typer.testing import CliRunner

    from polyrise.cli import app

    with pytest.raises(ValueError, match="needs at least one URL"):
        settings([])
    with pytest.raises(ValueError, match="'ftp://h/v1' is not an http\\(s\\) URL"):
        settings([server.base_url, "ftp://h/v1"])

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "lang": "en", "instruction": f"q{i}"}) + "\n" for i in range(6))
    )
    out = tmp_path / "responses.jsonl"
    args = ["generate", str(prompts), "-o", str(out), "--engine", "openai", "--model", "m", "--api-key-env", ""]
    args += ["--base-url", f"{server.base_url}, {second_server.base_url}", "--batch-size", "1"]
    server.delay = second_server.delay = {f"q{i}": 0.05 for i in range(6)}
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["output"] for line in out.read_text().splitlines()] == [f"echo:q{i}" for i in range(6)]
    assert server.requests and second_server.requests and server.max_in_flight == second_server.max_in_flight == 1


# A misbehaving server: every case is one PolyriseError naming the server's URL, nothing cached for it.


def _chat_body(**choice: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}} | choice]}


def _scored_body(values: Any, offsets: Any = None) -> dict[str, Any]:
    """A completions answer for the prompt "ab" (two one-character tokens), with the given log-probs."""
    logprobs = {"tokens": ["a", "b"], "token_logprobs": values, "text_offset": offsets or [0, 1]}
    return {"choices": [{"index": 0, "text": "", "logprobs": logprobs}]}


def _bad_answers() -> Iterator[tuple[str, str, bytes, str]]:
    """(case, endpoint, 200 body, what the error says): each way a 200 answer can be unusable."""
    for content in (None, 7, [], {"text": "hi"}):
        yield (
            f"content {content!r}",
            "chat",
            json.dumps(_chat_body(message={"content": content})).encode(),
            "no answer text",
        )
    yield "no message", "chat", json.dumps({"choices": [{"index": 0}]}).encode(), "no answer text"
    for choices in ([], None, "x", [1], {"0": {}}):
        yield f"choices {choices!r}", "chat", json.dumps({"choices": choices}).encode(), "no choices"
    for n in (2, 1000):
        many = {"choices": [_chat_body()["choices"][0]] * n}
        yield (
            f"{n} choices",
            "chat",
            json.dumps(many).encode(),
            f"the server returned {n} choices; polyrise asks for one",
        )
    huge = json.dumps(_chat_body(message={"content": "x" * (17 * 2**20)})).encode()
    yield "a 17 MiB answer", "chat", huge, "the response exceeds 16 MiB"
    yield "100k-deep JSON", "chat", b"[" * 100_000 + b"]" * 100_000, "the response is not valid JSON"
    yield "not UTF-8", "chat", b'{"choices": "\xff"}', "the response is not valid JSON"
    for value in (float("nan"), float("inf"), float("-inf"), 0.5, "-1", True, [-1.0], {}):
        yield f"log-prob {value!r}", "score", json.dumps(_scored_body([None, value])).encode(), "the log-prob"
    for offsets in (["0", "1"], [0], [0, 1.5]):
        body = json.dumps(_scored_body([None, -1.0], offsets)).encode()
        yield f"offsets {offsets!r}", "score", body, "malformed prompt log-probs"
    yield "log-probs not a list", "score", json.dumps(_scored_body("-1", "01")).encode(), "malformed prompt log-probs"


@pytest.mark.parametrize(("case", "endpoint", "body", "says"), list(_bad_answers()), ids=lambda v: str(v)[:30])
def test_an_unusable_answer_is_one_error_naming_the_server_and_nothing_is_cached(
    server, api_key, tmp_path, case, endpoint, body, says
):
    server.raw_reply = body
    generator = Generator(make(server, max_retries=3), GenerationCache(tmp_path / "c.sqlite"))
    path = "chat/completions" if endpoint == "chat" else "completions"
    with pytest.raises(PolyriseError) as info:
        if endpoint == "chat":
            generator.generate([ChatRequest.user("a question")], SamplingSettings())
        else:
            generator.loglikelihood([("a", "b")])
    message = str(info.value)
    assert f"{server.base_url}/{path} (model 'test-model'): " in message and says in message, case
    assert "\n" not in message and len(message) < 1000 and api_key not in message
    assert len(server.requests) == 1  # a 200 answer is not retried
    server.raw_reply, server.prompt_logprobs = None, True  # the server behaves again: it is asked again
    if endpoint == "chat":
        assert generator.generate([ChatRequest.user("a question")], SamplingSettings()) == ["echo:a question"]
    else:
        assert generator.loglikelihood([("a", "b")])[0].token_logprobs == (char_logprob("b"),)
    assert len(server.requests) == 2


def test_log_probs_a_hair_above_zero_are_accepted(server, api_key):
    server.raw_reply = json.dumps(_scored_body([None, 1e-7])).encode()  # log_softmax of a near-certain token
    assert make(server).loglikelihood([("a", "b")])[0].token_logprobs == (1e-7,)


@pytest.mark.parametrize(("status", "retries"), [(s, r) for s in (408, 429, 500, 503) for r in (0, 1, 3)])
def test_the_error_says_how_many_attempts_were_made(server, api_key, status, retries):
    server.always = status
    with pytest.raises(PolyriseError) as info:
        make(server, max_retries=retries).complete([ChatRequest.user("x")], SamplingSettings())
    made = f"{retries + 1} attempt{'s' if retries else ''}"
    assert f"HTTP {status} after {made}: " in str(info.value)
    assert len(server.requests) == retries + 1


@pytest.mark.parametrize(
    "header",
    [{"retry-after": "3600"}, {"retry-after-ms": "3600000"}, {"retry-after": "Fri, 01 Jan 2100 00:00:00 GMT"}],
)
def test_a_retry_after_beyond_the_timeout_fails_at_once_saying_so(server, api_key, header):
    server.always, server.fail_headers = 429, header
    with pytest.raises(PolyriseError) as info:
        make(server, max_retries=3).complete([ChatRequest.user("x")], SamplingSettings())
    assert len(server.requests) == 1
    assert re.search(
        r"HTTP 429 after 1 attempt: .*retry after \d+(\.\d+)?(e\+\d+)? s, longer than the timeout \(10 s\)",
        str(info.value),
    )


@pytest.mark.parametrize("retries", [0, 1])
@pytest.mark.parametrize("misbehaviour", ["trickle", "hang"])
def test_the_timeout_bounds_each_attempt_however_slowly_the_answer_comes(server, api_key, misbehaviour, retries):
    if misbehaviour == "trickle":
        server.trickle = 0.05  # each byte well within a read timeout, the whole answer several seconds
    else:
        server.hang = 30
    start = time.monotonic()
    with pytest.raises(PolyriseError) as info:
        make(server, timeout=0.5, max_retries=retries).complete([ChatRequest.user("x")], SamplingSettings())
    attempts = retries + 1
    assert time.monotonic() - start < 0.5 * attempts + 1.5  # timeout x attempts + backoff
    assert str(info.value).startswith(f"{server.base_url}/chat/completions (model 'test-model'): ")
    assert f"after {attempts} attempt" in str(info.value) and len(server.requests) == attempts


def test_a_key_a_server_echoes_in_an_answer_is_never_stored(server, api_key, tmp_path):
    server.echo_auth = True
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "1", "lang": "en", "instruction": "hi"}) + "\n")
    out = tmp_path / "responses.jsonl"
    args = ["generate", str(prompts), "-o", str(out), "--engine", "openai", "--model", "m"]
    args += ["--base-url", server.base_url, "--api-key-env", "POLYRISE_TEST_KEY"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Bearer <redacted>" in out.read_text()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert api_key.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("value", ["sk-test-123\r", " sk-test-123\n", "\tsk-test-123 \r\n"])
def test_a_key_with_surrounding_whitespace_is_stripped(server, monkeypatch, value):
    monkeypatch.setenv("POLYRISE_TEST_KEY", value)
    make(server).complete([ChatRequest.user("x")], SamplingSettings())
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-test-123"


@pytest.mark.parametrize("value", ["sk-te st", "sk\x01x", "sk-\x7fx", "sk-é", "a\rb", "sk\u200bx"])
def test_a_key_with_characters_no_key_has_is_one_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("POLYRISE_TEST_KEY", value)
    with pytest.raises(PolyriseError) as info:
        OpenAIEngine(settings("http://127.0.0.1:9/v1"))
    assert "environment variable POLYRISE_TEST_KEY holds" in str(info.value) and value not in str(info.value)


@pytest.mark.parametrize(
    "url", ["http://user:s3cret@h/v1", "http://s3cret@h/v1", "https://:s3cret@h:8000/v1", "http://u:s3cret@h"]
)
def test_a_base_url_with_credentials_is_refused_without_echoing_them(server, url, tmp_path):
    with pytest.raises(ValueError, match="credentials") as info:
        settings(url)
    assert "s3cret" not in info.value.errors()[0]["msg"]  # what polyrise prints of a validation error
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "1", "lang": "en", "instruction": "hi"}) + "\n")
    args = ["generate", str(prompts), "-o", str(tmp_path / "out.jsonl"), "--engine", "openai", "--model", "m"]
    result = CliRunner().invoke(app, [*args, "--base-url", f"{server.base_url},{url}", "--api-key-env", ""])
    assert result.exit_code == 1 and isinstance(result.exception, PolyriseError)
    assert "credentials" in str(result.exception) and "s3cret" not in str(result.exception)
    assert not (tmp_path / "out.jsonl").exists() and not server.requests
