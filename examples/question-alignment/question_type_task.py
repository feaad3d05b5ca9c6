"""Write a small few-shot classification task from aligned instructions: is an instruction a question or a request?

The label comes from the English text (a question ends with "?") and is shared by every translation of the same
`id`, so the task is the same in every language. Items are taken from the end of the files (the X-AlpacaEval
translation evaluation of the example uses the first ones) and balanced between the two labels.

    python examples/question-alignment/question_type_task.py ../shared/data/x-alpacaeval runs/question-type \\
        --langs en,zh,es,de,fr,ja,ru,th --per-label 40
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder of <lang>.json arrays with id + instruction (X-AlpacaEval)")
    parser.add_argument("out", type=Path, help="folder to write <lang>.jsonl (id, text, label) into")
    parser.add_argument("--langs", default="en,zh,es,de,fr,ja,ru,th")
    parser.add_argument("--per-label", type=int, default=40)
    args = parser.parse_args()

    langs = args.langs.split(",")
    texts = {
        lang: {str(r["id"]): r["instruction"] for r in json.loads((args.source / f"{lang}.json").read_text())}
        for lang in langs
    }
    ids = [i for i in reversed(list(texts["en"])) if all(i in texts[lang] for lang in langs)]
    label = {i: "question" if texts["en"][i].rstrip().endswith("?") else "request" for i in ids}
    chosen = []
    for wanted in ("question", "request"):
        chosen += [i for i in ids if label[i] == wanted and "\n" not in texts["en"][i]][: args.per_label]
    chosen.sort(key=int)
    args.out.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        rows = [{"id": i, "text": " ".join(texts[lang][i].split()), "label": label[i]} for i in chosen]
        (args.out / f"{lang}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(chosen)} items x {len(langs)} languages to {args.out}")


if __name__ == "__main__":
    main()
