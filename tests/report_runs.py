"""A small synthetic run dir for the report's per-sample views: two iterations of pairs (kept, dropped, labelled
right or wrong), MGSM rows of three models and held-out answers, with texts that would break naive HTML."""

from __future__ import annotations

import json
from pathlib import Path

from polyrise.evaluation.math import MathPrediction
from polyrise.evaluation.reward import RewardLabel
from polyrise.io import write_jsonl
from polyrise.records import DroppedPair, PreferencePair, Response

NASTY = "</script><script>document.title='pwned'</script> <b>bold</b> & \"quoted\" 'single' <!-- comment"
"""A model output that closes the data block, injects markup and quotes, if anything is embedded unescaped."""

SPANISH = "La capital de Australia es Canberra, una ciudad planificada elegida como compromiso entre otras dos."
ENGLISH = "The capital of Australia is Canberra, a planned city chosen as a compromise between two others."


def sample_run(root: Path) -> Path:
    """Write the run dir under `root` and return it. Iteration 0: 3 kept pairs (es, en/es, de; the es one labelled
    chosen right, rejected wrong), 2 dropped (es `wrong_language`, de `translation_failure`); iteration 1: 1 kept
    es pair holding `NASTY`. Evaluation: mgsm on M0, M1 (iter_0) and M2 (iter_1), heldout on M0 and M1."""
    run = root / "run"
    it0, it1 = run / "iter_0", run / "iter_1"
    (it0 / "eval").mkdir(parents=True)
    (it1 / "eval").mkdir(parents=True)
    write_jsonl(
        it0 / "pairs.jsonl",
        [
            PreferencePair(id="g1", lang="es", via="es", prompt="¿Cuánto es 2 + 3?", chosen="Es 5.", rejected="Es 6."),
            PreferencePair(
                id="g1", lang="en", via="es", prompt="What is 2 + 3?", chosen="It is 5.", rejected="It is 6."
            ),
            PreferencePair(
                id="g2", lang="de", via="de", prompt="Wie viel ist 4 + 4?", chosen="Acht.", rejected="Neun."
            ),
        ],
    )
    write_jsonl(
        it0 / "pairs_dropped.jsonl",
        [
            DroppedPair(
                id="g2",
                lang="es",
                via="es",
                prompt="¿Cuánto es 4 + 4?",
                chosen="It is eight, in English.",
                rejected="Son ocho.",
                reason="wrong_language",
            ),
            DroppedPair(
                id="g3",
                lang="de",
                via="de",
                prompt="Was ist 9 - 2?",
                chosen=None,
                rejected="Sieben.",
                reason="translation_failure",
            ),
        ],
    )
    write_jsonl(
        it0 / "reward.jsonl", [RewardLabel(id="g1", lang="es", via="es", chosen_right=True, rejected_right=False)]
    )
    write_jsonl(
        it1 / "pairs.jsonl",
        [PreferencePair(id="g4", lang="es", via="es", prompt="Escribe código.", chosen=NASTY, rejected="No sé.")],
    )
    mgsm = {
        "M0": [("1", "en", "The answer is 5.", "5"), ("1", "es", "La respuesta es 7.", "5")],
        "M1": [("1", "en", "The answer is 5.", "5"), ("1", "es", "La respuesta es 5.", "5")],
        "M2": [("1", "en", NASTY, "5"), ("1", "es", "La respuesta es 5.", "5")],
    }
    for label, it in (("M0", it0), ("M1", it0), ("M2", it1)):
        rows = [MathPrediction(id=i, lang=lang, output=out, gold=gold) for i, lang, out, gold in mgsm[label]]
        write_jsonl(it / "eval" / f"mgsm_{label}.jsonl", rows)
    heldout = {"M0": ENGLISH, "M1": SPANISH}
    for label, answer in heldout.items():
        write_jsonl(
            it0 / "eval" / f"heldout_{label}.jsonl", [Response(id="h1", lang="es", prompt="¿Capital?", output=answer)]
        )

    def accuracy(rows: list[tuple[str, str, str, str]]) -> dict:
        return {lang: {"accuracy": float(out.endswith(f"{gold}.")), "n": 1} for _, lang, out, gold in rows}

    heldout_scores = {label: {"es": {"off_target": float(label == "M0"), "n": 1}} for label in heldout}
    scores0 = {"mgsm": {label: accuracy(mgsm[label]) for label in ("M0", "M1")}, "heldout": heldout_scores}
    (it0 / "eval" / "scores.json").write_text(json.dumps(scores0))
    (it1 / "eval" / "scores.json").write_text(json.dumps({"mgsm": {lab: accuracy(mgsm[lab]) for lab in ("M1", "M2")}}))
    return run
