"""OpenAIEngine against a real HTTP server on 127.0.0.1 that speaks /v1/chat/completions."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from engines import FakeServer

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
    assert len(server.requests) == 5 and again.stats == {"cached": 5, "generated": 0, "scored": 0}


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
