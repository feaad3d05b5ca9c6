#!/usr/bin/env bash
# The English-aligned policy pi for ICR on the embedded model (docs/icr.md, "On the embedded model").
# pi_ref = the embedded SmolLM2-135M-Instruct; pi = it after one DPO + NLL LoRA epoch (align.yaml) on 48 English
# preference pairs: chosen = GPT-4-turbo's answer (../shared/data/x-alpacaeval-gpt4-turbo/en.json), rejected =
# the embedded model's own greedy answer (48 new tokens, as the quickstart answers). The instructions are
# X-AlpacaEval rows 400-447: past the first 100 rows that the reflik evaluation scores, and none is a quickstart
# or held-out prompt (checked below). Run from the repository root:
#   bash examples/embedded-icr/align_english.sh        # writes runs/embedded-aligned/model (merged)
set -euo pipefail
OUT=${OUT:-runs/embedded-aligned}
DATA=${DATA:-../shared/data/x-alpacaeval-gpt4-turbo/en.json}
PY=${PYTHON:-python}
POLYRISE=(${POLYRISE:-polyrise})
mkdir -p "$OUT"

# 1. the English instructions and GPT-4-turbo's answers (read from ../shared/data, never copied into the repo)
"$PY" - "$DATA" "$OUT" <<'PY'
import json, sys
from importlib import resources
data, out = sys.argv[1], sys.argv[2]
rows = json.load(open(data, encoding="utf-8"))
taken = set()
for name in ("quickstart.jsonl", "heldout.jsonl"):
    for line in resources.files("polyrise.data").joinpath(name).read_text(encoding="utf-8").splitlines():
        if line.strip():
            taken.add(json.loads(line)["instruction"].strip().lower())
with open(f"{out}/prompts.jsonl", "w", encoding="utf-8") as p, open(f"{out}/gpt4.jsonl", "w", encoding="utf-8") as g:
    for i in range(400, 448):
        r = rows[i]
        assert r["instruction"].strip().lower() not in taken, (i, r["instruction"])
        rid = f"xae-{i}"
        p.write(json.dumps({"id": rid, "lang": "en", "instruction": r["instruction"]}, ensure_ascii=False) + "\n")
        g.write(json.dumps({"id": rid, "output": r["output"]}, ensure_ascii=False) + "\n")
PY

# 2. the embedded model's own greedy answers (the quickstart's answer settings)
"${POLYRISE[@]}" generate "$OUT/prompts.jsonl" -m embedded:smollm2-135m-instruct -o "$OUT/greedy.jsonl" \
    --max-new-tokens 48 --temperature 0 --repetition-penalty 1.1 --batch-size 24

# 3. pairs (PreferencePair rows): chosen = GPT-4-turbo, rejected = the model's greedy answer
"$PY" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
gpt4 = {r["id"]: r["output"] for r in map(json.loads, open(f"{out}/gpt4.jsonl", encoding="utf-8"))}
kept = dropped = 0
with open(f"{out}/pairs.jsonl", "w", encoding="utf-8") as f:
    for r in map(json.loads, open(f"{out}/greedy.jsonl", encoding="utf-8")):
        chosen, rejected = gpt4[r["id"]].strip(), r["output"].strip()
        if not chosen or not rejected or chosen == rejected:
            dropped += 1
            continue
        kept += 1
        pair = {"id": r["id"], "lang": "en", "via": "en", "prompt": r["prompt"], "chosen": chosen, "rejected": rejected}
        f.write(json.dumps(pair, ensure_ascii=False) + "\n")
print(json.dumps({"pairs": kept, "dropped": dropped}))
PY

# 4. one DPO + NLL LoRA epoch from the embedded model, with it as the DPO reference; merged save
"${POLYRISE[@]}" train "$OUT/pairs.jsonl" --config examples/embedded-icr/align.yaml -m embedded:smollm2-135m-instruct \
    --out "$OUT/model"
