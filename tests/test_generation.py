"""HF engine and generation cache on a tiny random Llama with the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from polyrise.errors import PolyriseError
from polyrise.generation import ChatRequest, Generator, answer_prompts, render_chat
from polyrise.generation.cache import GenerationCache
from polyrise.generation.hf import _TORCH_THREADS, HFEngine, ThreadPolicy, encode_pair, truncate_at_stop
from polyrise.models import resolve_model
from polyrise.records import Prompt
from polyrise.settings import ModelSettings, SamplingSettings

PROMPTS = [
    "Hi",
    "Give three tips for staying healthy and explain each one in detail.",
    "¿Cuál es la capital de Francia?",
    "Write a poem.",
    "Explain the difference between weather and climate, with two examples of each.",
]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFEngine(resolve_model(str(tiny_model_dir)), batch_size=4)


def test_batched_greedy_equals_one_by_one(engine):
    params = SamplingSettings(max_new_tokens=12)
    requests = [ChatRequest.user(p) for p in PROMPTS]
    batched = engine.complete(requests, params)
    single = [engine.complete([r], params)[0] for r in requests]
    assert batched == single
    assert all(batched)


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_matches_transformers_generate(engine, penalty):
    """The pruning decode loop is a faithful greedy decoder: same tokens as `model.generate`."""
    import torch

    params = SamplingSettings(max_new_tokens=16, repetition_penalty=penalty)
    for prompt in PROMPTS[:3]:
        ids = engine.tokenizer(engine.render(ChatRequest.user(prompt)), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            ref = engine.model.generate(
                **ids,
                max_new_tokens=16,
                do_sample=False,
                repetition_penalty=penalty,
                pad_token_id=engine.tokenizer.pad_token_id,
            )
        expected = engine.tokenizer.decode(ref[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        assert engine.complete([ChatRequest.user(prompt)], params) == [expected]


def test_stop_string_ends_a_row_early(engine):
    params = SamplingSettings(max_new_tokens=20)
    [full] = engine.complete([ChatRequest.user("Hi")], params)
    stop = full[3:6]
    assert stop and full.find(stop) >= 0
    [cut] = engine.complete([ChatRequest.user("Hi")], params.model_copy(update={"stop": [stop]}))
    assert cut == full[: full.find(stop)]


def test_sampling_is_seeded(engine):
    requests = [ChatRequest.user(p) for p in PROMPTS[:3]]
    params = SamplingSettings(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    first = engine.complete(requests, params)
    assert engine.complete(requests, params) == first
    assert engine.complete(requests, params.model_copy(update={"seed": 8})) != first


def test_render_applies_chat_template_and_prefix(engine):
    text = engine.render(ChatRequest.user("Bonjour", prefix="<translated>\n"))
    assert "<|im_start|>user\nBonjour<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n<translated>\n")


def test_stop_strings_cut_output():
    assert truncate_at_stop("abc</translated>rest", ["</translated>"]) == "abc"
    assert truncate_at_stop("a STOP b END c", ["END", "STOP"]) == "a "
    assert truncate_at_stop("nothing", []) == "nothing"


def test_cache_hit_skips_generation(engine, tmp_path, monkeypatch):
    monkeypatch.setattr("polyrise.generation.COUNT_SLICE", 2)  # the tokens are counted over several slices
    params = SamplingSettings(max_new_tokens=8)
    requests = [ChatRequest.user(p) for p in PROMPTS]
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    first = gen.generate(requests, params)
    tokens = sum(len(engine.tokenizer(out, add_special_tokens=False)["input_ids"]) for out in first)
    assert tokens > 0
    assert gen.stats == {"cached": 0, "generated": len(PROMPTS), "scored": 0, "tokens": tokens}

    reopened = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))  # a new process would do this
    assert reopened.generate(requests, params) == first
    # cached outputs count their tokens too: what the requests cost, whoever generated them
    assert reopened.stats == {"cached": len(PROMPTS), "generated": 0, "scored": 0, "tokens": tokens}

    reopened.generate(requests, params.model_copy(update={"max_new_tokens": 9}))
    assert reopened.stats["generated"] == len(PROMPTS)  # other sampling params are other keys


def test_duplicate_requests_generate_once(engine, tmp_path):
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    out = gen.generate([ChatRequest.user("Hi")] * 3, SamplingSettings(max_new_tokens=4))
    assert len(set(out)) == 1
    assert gen.stats["generated"] == 1


def test_answer_prompts_keeps_ids_and_languages(engine, tmp_path):
    prompts = [Prompt(id="a", lang="en", instruction="Hi"), Prompt(id="a", lang="es", instruction="Hola")]
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    responses = answer_prompts(gen, prompts, SamplingSettings(max_new_tokens=4))
    assert [(r.id, r.lang, r.prompt) for r in responses] == [("a", "en", "Hi"), ("a", "es", "Hola")]


def test_model_without_chat_template_is_an_error(tiny_model_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    cfg_path = bare / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(PolyriseError, match="no chat template"):
        HFEngine(resolve_model(str(bare)))
    template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    engine = HFEngine(resolve_model(str(bare)), ModelSettings(spec=str(bare), chat_template=template))
    assert engine.render(ChatRequest.user("x")) == "<user>x<assistant>"


def test_missing_model_path_is_an_error(tmp_path):
    with pytest.raises(PolyriseError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(PolyriseError, match="not a model directory"):
        resolve_model(str(tmp_path))


@pytest.mark.slow
def test_embedded_model_generates_english_and_translates(tmp_path):
    from polyrise.self_translation import TranslationJob, translate

    engine = HFEngine(resolve_model("embedded:smollm2-135m-instruct"), batch_size=4)
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    params = SamplingSettings(max_new_tokens=40)
    [answer] = gen.generate([ChatRequest.user("What is the capital of France?")], params)
    assert "Paris" in answer
    [t] = translate(gen, [TranslationJob("x", "prompt", "en", "es", "Good morning, my friend.")], params)
    assert t.output, t.raw
    assert "<translated>" not in t.output and "</translated>" not in t.output


def test_loglikelihood_equals_a_direct_computation_and_is_cached(engine, tmp_path, monkeypatch):
    requests = [("The sky is", " blue today"), ("Hello", " world"), ("A much longer context to pad against", " x")]
    scored = engine.loglikelihood(requests)
    for (context, continuation), got in zip(requests, scored, strict=True):
        ctx = engine.tokenizer(context)["input_ids"]
        ids = engine.tokenizer(context + continuation)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(engine.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        direct = [logprobs[i - 1, ids[i]].item() for i in range(len(ctx), len(ids))]
        assert got.tokens == len(direct) and got.logprob == pytest.approx(sum(direct), abs=1e-4)
        assert got.token_logprobs == pytest.approx(direct, abs=1e-4)
    assert engine.loglikelihood(requests, max_tokens=1)[0].token_logprobs == pytest.approx(
        scored[0].token_logprobs[:1], abs=1e-5
    )

    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    first = gen.loglikelihood(requests)
    calls = []
    monkeypatch.setattr(engine, "loglikelihood", lambda *a, **k: calls.append(a) or [])
    again = Generator(engine, GenerationCache(tmp_path / "c.sqlite")).loglikelihood(requests)
    assert again == first and calls == [] and gen.stats["scored"] == 3


def test_shared_contexts_score_as_per_pair_and_run_each_context_once(engine):
    """Pairs sharing a context (run once, its continuations on its KV cache) score as the per-pair computation
    does: contexts of different lengths in one batch, continuations of one to several tokens, a context with more
    continuations than a batch (batch size 4: it runs once per 4), an empty context (BOS), unshared pairs."""
    prompt = "Review: the film was long.\nAnswer: negative\n\nReview: what a joy!\nAnswer:"
    requests = [
        *[(prompt, c) for c in (" positive", " mixed feelings about it")],
        ("Hello", " world and everyone in it"),
        *[("Question: 2 + 2 =\nAnswer: ", c) for c in ("four", "none", "22", "4", "5", "x")],
        *[("The sky is", c) for c in (" blue", " very grey today")],
        *[("", c) for c in (" Yes.", " No")],
        (prompt, " neutral"),  # the first context again, after others
    ]
    tokens_fed: list[int] = []  # real (unpadded) input tokens of each forward pass
    padded_between: list[bool] = []  # a pass on cached contexts of different lengths

    def count(_, args, kwargs):
        width, mask = kwargs["input_ids"].shape[1], kwargs["attention_mask"]
        tokens_fed.append(int(mask[:, -width:].sum()))
        padded_between.append(mask.shape[1] > width and bool((mask[:, :-width] == 0).any()))

    hook = engine.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        shared = engine.loglikelihood(requests)
        shared_tokens, tokens_fed[:] = sum(tokens_fed), []
        per_pair = engine.loglikelihood(requests, share_contexts=False)
        per_pair_tokens = sum(tokens_fed)
    finally:
        hook.remove()
    assert any(padded_between) and any(s.tokens == 1 for s in shared) and len({s.tokens for s in shared}) > 3
    for got, want in zip(shared, per_pair, strict=True):
        assert got.tokens == want.tokens
        assert got.token_logprobs == pytest.approx(want.token_logprobs, abs=1e-4)
        assert got.logprob == pytest.approx(want.logprob, abs=1e-4)

    encoded = [encode_pair(engine.tokenizer, context, continuation) for context, continuation in requests]
    assert per_pair_tokens == sum(len(ids) for ids, _ in encoded)
    # a shared context's tokens are fed once, then each continuation's tokens but its first (scored by the
    # context's last logits); a pair alone is fed whole
    units = [[0, 1, 13], [3, 4, 5, 6], [7, 8], [9, 10], [11, 12]]
    alone = [2]
    assert shared_tokens == sum(
        encoded[u[0]][1] + sum(len(encoded[k][0]) - encoded[k][1] - 1 for k in u) for u in units
    ) + sum(len(encoded[k][0]) for k in alone)

    truncated = engine.loglikelihood(requests, max_tokens=2)
    assert [t.token_logprobs for t in truncated] == [pytest.approx(s.token_logprobs[:2], abs=1e-4) for s in shared]


@pytest.fixture
def thread_policy(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield ThreadPolicy()
    torch.set_num_threads(_TORCH_THREADS)


@pytest.mark.parametrize(
    ("others", "cores", "expected"),
    [(0.0, 4, 4), (0.4, 4, 4), (1.0, 4, 3), (2.6, 4, 1), (9.0, 4, 1), (1.0, 2, 1), (0.3, 2, 2)],
)
def test_thread_policy_leaves_the_cores_others_use(thread_policy, monkeypatch, others, cores, expected):
    """The count is the cores minus what other processes used over the window, rounded, at least one."""
    thread_policy.cores = cores
    thread_policy.last = (100.0, 50.0, 10.0)
    own = 2.0 * 1.9  # this process used 1.9 cores over the 2 s window
    monkeypatch.setattr(thread_policy, "_sample", lambda: (102.0, 50.0 + own + 2.0 * others, 10.0 + own))
    assert thread_policy.apply() == expected
    assert torch.get_num_threads() == expected


def test_thread_policy_keeps_a_fixed_or_unmeasurable_count(thread_policy, monkeypatch):
    thread_policy.last = (100.0, 0.0, 0.0)
    torch.set_num_threads(1)
    monkeypatch.setattr(thread_policy, "_sample", lambda: (100.01, 0.0, 0.0))  # a 10 ms window
    assert thread_policy.apply() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    fixed = ThreadPolicy()
    fixed.last = (0.0, 0.0, 0.0)
    monkeypatch.setattr(fixed, "_sample", lambda: (10.0, 20.0, 0.0))  # others used everything
    torch.set_num_threads(2)
    assert fixed.apply() == 2


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_thread_policy_measures_a_real_busy_process(thread_policy):
    """A busy loop in another process takes about one core: the policy leaves it (real CPU counters)."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        thread_policy.last = thread_policy._sample()
        time.sleep(1.5)
        threads = thread_policy.apply()
    finally:
        hog.kill()
        hog.wait()
    assert 1 <= threads < thread_policy.cores or thread_policy.cores == 1


def _bos_tokenizer():
    """A tokenizer that adds a BOS by default and a chat template that writes one too (as Llama-3-Instruct's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "hello", "there", "blue", "sky", "is", "the"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
        chat_template=(
            "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
        ),
    )


def test_scored_context_is_the_generation_context_with_one_bos():
    """A chat template that writes the BOS and a tokenizer that adds one: the scored context's ids are the ids the
    engines generate from (one BOS), and a plain-text context still gets the tokenizer's BOS, once."""
    tokenizer = _bos_tokenizer()
    bos = tokenizer.bos_token_id
    rendered = render_chat(tokenizer, ChatRequest.user("hello there"))
    generated_from = tokenizer(rendered, add_special_tokens=False)["input_ids"]  # HFEngine/VLLMEngine.complete
    assert generated_from[:1] == [bos] and generated_from.count(bos) == 1
    ids, n_context = encode_pair(tokenizer, rendered, "the sky is blue")
    assert ids[:n_context] == generated_from
    assert ids[n_context:] == tokenizer("the sky is blue", add_special_tokens=False)["input_ids"]
    ids, n_context = encode_pair(tokenizer, "the sky is", " blue")
    assert ids[:n_context] == [bos, *tokenizer("the sky is", add_special_tokens=False)["input_ids"]]


@pytest.mark.parametrize(
    ("tokens", "new", "context", "fits"),
    [(t, n, c, c is None or t + n <= c) for c in (None, 1, 2048) for t in (0, 1, 2047, 2048, 10**6) for n in (0, 1)],
)
def test_check_fits_at_the_context_bound(tokens, new, context, fits):
    from polyrise.generation.base import check_fits

    if fits:
        check_fits(tokens, new, context, "m", "text")
        return
    with pytest.raises(PolyriseError, match=rf"a text of {tokens} tokens \(\+ {new} to generate\) exceeds the context"):
        check_fits(tokens, new, context, "m", "text")


def test_the_vllm_engine_refuses_a_text_beyond_its_context_before_generating(monkeypatch, tokenizer):
    """Without vLLM: its module a stub, the engine's `llm` one that fails if asked to generate."""
    from types import SimpleNamespace

    from polyrise.generation.vllm import VLLMEngine

    class NoLLM:
        def generate(self, *args, **kwargs):
            raise AssertionError("asked to generate a text that does not fit")

    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(SamplingParams=lambda **kwargs: kwargs))
    engine = VLLMEngine.__new__(VLLMEngine)
    engine.tokenizer, engine.llm, engine.lora, engine.context = tokenizer, NoLLM(), None, 64
    engine.resolved = SimpleNamespace(spec="served-model")
    long = ChatRequest.user("word " * 100)
    with pytest.raises(PolyriseError, match=r"exceeds the context of 'served-model' \(64 tokens\)"):
        engine.complete([long], SamplingSettings(max_new_tokens=8))
    with pytest.raises(PolyriseError, match=r"\+ 1 to generate\) exceeds the context of 'served-model'"):
        engine.loglikelihood([("word " * 100, " yes")])
