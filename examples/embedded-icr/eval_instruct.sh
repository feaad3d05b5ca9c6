#!/usr/bin/env bash
# The released checkpoint's row of docs/icr.md's embedded table: the embedded SmolLM2-135M-Instruct (pi_ref) measured
# as quickstart-icr.yaml measures M0 and M1 — reference likelihood of the first 100 GPT-4-turbo X-AlpacaEval answers
# per language (256 tokens) and the off-target rate of its answers to the 8 held-out prompts per language (greedy,
# 48 new tokens, repetition penalty 1.1, langid 5 words / 0.8). Run from the repository root:
#   bash examples/embedded-icr/eval_instruct.sh          # writes runs/embedded-instruct-eval
set -euo pipefail
OUT=${OUT:-runs/embedded-instruct-eval}
POLYRISE=(${POLYRISE:-polyrise})
M=embedded:smollm2-135m-instruct
mkdir -p "$OUT"
"${POLYRISE[@]}" eval --task reflik --source '../shared/data/x-alpacaeval-gpt4-turbo/{lang}.json' \
    --langs en,es,de,fr --limit 100 --max-new-tokens 256 -m "$M" --label Instruct -o "$OUT"
"${POLYRISE[@]}" generate src/polyrise/data/heldout.jsonl -m "$M" -o "$OUT/heldout_Instruct.jsonl" \
    --max-new-tokens 48 --temperature 0 --repetition-penalty 1.1 --batch-size 24
"${POLYRISE[@]}" score langid "$OUT/heldout_Instruct.jsonl" --min-words 5 --min-confidence 0.8 -o "$OUT/heldout"
