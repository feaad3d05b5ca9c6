"""The cloned-language sandbox: languages, tokenizer, build outputs, reproducibility, and (slow) the M0 imbalance."""

from __future__ import annotations

import json
import random
import re
import statistics
import string
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from polyrise.errors import PolyriseError
from polyrise.evaluation.math import extract_answer, load_math
from polyrise.languages import get_language
from polyrise.sandbox import (
    CLONES,
    AlignSettings,
    DataMix,
    ModelSize,
    PretrainSettings,
    SandboxInfo,
    Sizes,
    build_sandbox,
)
from polyrise.sandbox.data import draw_splits, n_training_problems, training_examples, translation_example
from polyrise.sandbox.tokenizer import END, TAGS, build_tokenizer, encode_example, instruction_phrases
from polyrise.sandbox.world import Problem, _instruction_words, english_words, make_clones, render, sample_problems
from polyrise.self_translation import extract_translation
from polyrise.settings import SamplingSettings
from polyrise.templates import TRANSLATION_PREFIX, translation_prompt
from polyrise.versions import library_versions

LANGS = ["en", *CLONES]
SHARED = set(string.digits) | set(string.punctuation)

TINY = {
    "mix": DataMix(english_task=24, clone_task=2, translation=6),
    "model_size": ModelSize(hidden=32, layers=1, heads=2, intermediate=64),
    "train": PretrainSettings(epochs=1, batch_size=8),
    "sizes": Sizes(eval=6, translation_test=3, prompts=5),
}


@pytest.fixture(scope="module")
def world():
    return make_clones()


@pytest.fixture(scope="module")
def problems():
    return sample_problems(random.Random(0), 60, set())


@pytest.fixture(scope="module")
def tokenizer(world, problems):
    texts = [render(t, lang, world) for p in problems for t in (p.question, p.answer) for lang in LANGS]
    return build_tokenizer(texts, instruction_phrases(LANGS))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny build with its M0 measurements (seconds on CPU)."""
    return build_sandbox(tmp_path_factory.mktemp("sandbox") / "a", seed=3, progress=False, **TINY)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z]+", text))


def test_clone_codes_are_languages_polyrise_knows():
    for code in CLONES:
        lang = get_language(code)
        assert lang.name in translation_prompt("x", "en", code)
        assert len(code) == 3 and "qaa" <= code <= "qtz"  # ISO 639 private use: never a real language


def test_clones_share_no_words_with_english_or_each_other(world, problems):
    words = {lang: set() for lang in LANGS}
    for p in problems:
        for lang in LANGS:
            for text in (p.question, p.answer):
                rendered = render(text, lang, world)
                words[lang] |= _words(rendered)
                assert set(rendered) - set(string.ascii_letters) - {" "} <= SHARED
    for a in LANGS:
        for b in LANGS:
            if a < b:
                assert not words[a] & words[b], (a, b)
    # clone words are not English words, not even the instruction words
    english = {w.lower() for w in english_words()} | _instruction_words()
    for code in CLONES:
        assert not {w.lower() for w in words[code]} & english


def test_reversed_clone_reorders_every_sentence(world):
    p = Problem(0, "Tom", "Anna", "apples", 3, 4)
    assert p.question == "Tom has 3 apples. Tom buys 4 more apples. How many apples does Tom have now?"
    assert p.answer == "3 + 4 = 7. Tom has 7 apples."
    same, rev = world["qaa"], world["qab"]
    assert same.order == "same" and rev.order == "reversed"
    lex = same.lexicon
    assert same.render("Tom has 3 apples.") == f"{lex['tom']} {lex['has']} 3 {lex['apples']}."
    lex = rev.lexicon
    assert rev.render("Tom has 3 apples.") == f"{lex['apples']} 3 {lex['has']} {lex['tom']}."
    # the equation is one unit: it is not reversed, so its last number is still the result
    assert rev.render(p.answer).startswith("3 + 4 = 7. ")
    assert rev.render(p.question).split()[:2] != same.render(p.question).split()[:2]


def test_answers_are_scored_by_their_final_integer_in_every_language(world, problems):
    for p in problems:
        for lang in LANGS:
            assert extract_answer(render(p.answer, lang, world), lang) == str(p.n)


def test_tokenizer_round_trips_and_has_the_protocol_tokens(tokenizer, world, problems):
    for tag in (*TAGS, END):
        ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tokenizer.unk_token_id
    texts = [render(t, lang, world) for p in problems[:20] for t in (p.question, p.answer) for lang in LANGS]
    texts += [translation_prompt(texts[0], "en", c) for c in CLONES] + ["7\n\n 12  .", " Tom has\n"]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # numbers are digit tokens (the first may carry the space before the number)
    assert tokenizer.convert_ids_to_tokens(tokenizer("17", add_special_tokens=False)["input_ids"]) == ["1", "7"]
    assert tokenizer.tokenize("has 17") == ["has", " 1", "7"]
    # an edited instruction (not one of the phrase tokens) still encodes word by word
    edited = "Translate the following text into English. Write only the English translation."
    assert tokenizer.unk_token_id not in tokenizer(edited, add_special_tokens=False)["input_ids"]


def test_chat_template_and_translation_protocol(tokenizer, world, problems):
    src = render(problems[0].question, "qab", world)
    tgt = problems[0].question
    messages = translation_example(src, tgt, "qab", "en")
    prompt = tokenizer.apply_chat_template(list(messages[:1]), tokenize=False, add_generation_prompt=True)
    assert prompt == f"<|user|>\n{translation_prompt(src, 'qab', 'en')}<|end|>\n<|assistant|>\n"
    assert messages[1]["content"] == f"{TRANSLATION_PREFIX}{tgt}</translated>"
    # what the engine decodes (skip_special_tokens) still holds the tags that translation.py extracts between
    ids = tokenizer(messages[1]["content"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert extract_translation(tokenizer.decode(ids, skip_special_tokens=True)) == tgt
    example = encode_example(tokenizer, messages)
    trained = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
    assert trained[-1] == tokenizer.eos_token_id and tokenizer.eos_token == END
    assert tokenizer.decode(trained, skip_special_tokens=True) == messages[1]["content"]
    full = tokenizer.apply_chat_template(list(messages), tokenize=False)
    assert example["input_ids"] == tokenizer(full, add_special_tokens=False)["input_ids"][: len(example["input_ids"])]


def test_training_mix_is_imbalanced_as_asked(world, problems):
    mix = DataMix(english_task=10, clone_task=2, translation=3)
    examples = training_examples(
        sample_problems(random.Random(1), n_training_problems(mix, 2), set()), mix, world, random.Random(1)
    )
    kinds = {}
    for e in examples:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    assert kinds == {
        "task-en": 10,
        "task-qaa": 2,
        "task-qab": 2,
        "translate-en-qaa": 3,
        "translate-qaa-en": 3,
        "translate-en-qab": 3,
        "translate-qab-en": 3,
    }


def test_build_writes_documented_files_that_polyrise_loads(tiny):
    from polyrise.generation import ChatRequest
    from polyrise.generation.hf import HFEngine
    from polyrise.models import load_model, load_tokenizer, resolve_model
    from polyrise.settings import PromptSource
    from polyrise.sources import load_prompts

    out = Path(tiny.out)
    info = json.loads((out / "sandbox.json").read_text())
    assert info["seed"] == 3 and info["languages"] == LANGS and info["mix"]["clone_task"] == 2
    assert set(info["accuracy"]) == set(LANGS) and set(info["gap"]) == set(CLONES)
    assert set(info["translation_exact"]) == {f"{a}-{b}" for c in CLONES for a, b in (("en", c), (c, "en"))}
    assert info["versions"] == library_versions() and {"python", "torch", "trl"} <= set(info["versions"])

    rows = {lang: [json.loads(line) for line in (out / "eval" / f"{lang}.jsonl").open()] for lang in LANGS}
    assert all(set(r) == {"query", "response"} for r in rows["en"])
    answers = {lang: [r["response"] for r in rows[lang]] for lang in LANGS}
    assert len(rows["en"]) == 6 and all(answers[lang] == answers["en"] for lang in LANGS)
    problems = load_math(str(out / "eval" / "{lang}.jsonl"), LANGS)
    assert len(problems) == 18

    prompts = load_prompts(PromptSource(source=str(out / "prompts" / "train.jsonl")), ["en"])
    assert len(prompts) == 5 and all(p.lang == "en" for p in prompts)
    held_out = {r["query"] for r in rows["en"]}
    assert not held_out & {p.instruction for p in prompts}
    parallel = {lang: [json.loads(line) for line in (out / "translation" / f"{lang}.jsonl").open()] for lang in LANGS}
    assert [r["id"] for r in parallel["qab"]] == [r["id"] for r in parallel["en"]] and len(parallel["en"]) == 6

    resolved = resolve_model(str(out / "model"))
    tokenizer = load_tokenizer(resolved)
    assert tokenizer.chat_template and tokenizer.eos_token == END
    model = load_model(resolved)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    engine = HFEngine(resolved, model=model, tokenizer=tokenizer)
    (text,) = engine.complete([ChatRequest.user(rows["qaa"][0]["query"])], SamplingSettings(max_new_tokens=4))
    assert isinstance(text, str)
    # every file went through a temporary one (or dir, for the model) renamed into place: none is left over
    assert not [p.relative_to(out) for p in out.rglob(".*")]


def test_aligned_model_is_m0_tuned_towards_the_gold_answers(tiny):
    from polyrise.generation import ChatRequest
    from polyrise.generation.hf import HFEngine
    from polyrise.models import resolve_model
    from polyrise.sandbox.build import english_preferences

    problems = sample_problems(random.Random(5), 40, set())
    pairs = english_preferences(problems, random.Random(0))
    for p, problem in zip(pairs, problems, strict=True):  # chosen: the worked answer; rejected: a wrong result
        assert p.prompt == problem.question and p.chosen == problem.answer
        assert extract_answer(p.chosen, "en") == str(problem.n) != extract_answer(p.rejected, "en")
        wrong = int(extract_answer(p.rejected, "en"))
        assert p.rejected == problem.worked(wrong) and 1 <= abs(wrong - problem.n) <= 2 and wrong >= 0

    out = Path(tiny.out)
    assert tiny.aligned["examples"] == 24 and tiny.aligned["train_loss"] > 0  # min(pairs, the English task problems)
    assert (out / "aligned" / "model.safetensors").read_bytes() != (out / "model" / "model.safetensors").read_bytes()
    # the implicit reward log pi_aligned - log pi_M0 of its own training pairs favours the right answers
    trained = english_preferences(
        draw_splits(random.Random(3), TINY["sizes"], TINY["mix"], len(CLONES)).train[:24], random.Random(3)
    )
    margins = []
    for spec in ("aligned", "model"):
        engine = HFEngine(resolve_model(str(out / spec)))
        requests = [(engine.render(ChatRequest.user(p.prompt)), y) for p in trained for y in (p.chosen, p.rejected)]
        logps = [x.logprob for x in engine.loglikelihood(requests)]
        margins.append(np.array(logps[0::2]) - np.array(logps[1::2]))
    assert float(np.mean(margins[0] - margins[1])) > 0
    # sandbox.json's pair accuracies are these margins' signs: the reward's, and M0's likelihood alone
    measured = tiny.aligned["pair_accuracy"]
    assert measured["train"]["implicit_reward"]["accuracy"] == float(np.mean(margins[0] - margins[1] > 0))
    assert measured["train"]["m0_likelihood"]["accuracy"] == float(np.mean(margins[1] > 0))
    assert measured["train"]["m0_likelihood"]["n"] == 24 and measured["held_out"]["implicit_reward"]["n"] == 6
    saved = json.loads((out / "sandbox.json").read_text())["aligned"]["pair_accuracy"]
    assert saved == measured


def test_pair_accuracy_by_hand():
    from polyrise.sandbox.measure import pair_accuracy

    aligned = np.array([[-1.0, -5.0], [-2.0, -1.0], [-3.0, -3.0], [-4.0, -2.0]])
    reference = np.array([[-2.0, -3.0], [-1.0, -3.0], [-3.0, -3.0], [-5.0, -6.0]])
    # rewards (chosen, rejected): (1, -2) right, (-1, 2) wrong, (0, 0) a tie: wrong, (1, 4) wrong
    # reference alone: -2 > -3 right, -1 > -3 right, a tie: wrong, -5 > -6 right
    result = pair_accuracy(aligned, reference, seed=0, key="train")
    assert {name: (r["accuracy"], r["n"]) for name, r in result.items()} == {
        "implicit_reward": (0.25, 4),
        "m0_likelihood": (0.75, 4),
    }
    for r in result.values():
        assert 0.0 <= r["accuracy_ci_low"] <= r["accuracy"] <= r["accuracy_ci_high"] <= 1.0
    assert pair_accuracy(aligned, reference, seed=0, key="train") == result  # seeded intervals


def test_sandbox_json_is_written_atomically(tmp_path, monkeypatch):
    info = SandboxInfo(
        out=str(tmp_path), seed=1, languages=LANGS, clones=dict(CLONES), mix={}, model_size={}, train={}, sizes={}
    )
    path = info.save()
    assert path == tmp_path / "sandbox.json" and json.loads(path.read_text())["seed"] == 1
    before = path.read_bytes()

    def dump_half(data, fh, **kwargs):  # the write fails midway: half the JSON is in the file being written
        fh.write('{"seed": ')
        raise OSError("No space left on device")

    monkeypatch.setattr("polyrise.io.json.dump", dump_half)
    info.seed = 2
    with pytest.raises(PolyriseError, match=r"sandbox\.json: cannot write \(No space"):  # one error naming it
        info.save()
    assert path.read_bytes() == before  # the previous sandbox.json, whole
    assert [p.name for p in tmp_path.iterdir()] == ["sandbox.json"]  # no temp file left behind


def test_same_seed_same_weights(tiny, tmp_path):
    again = build_sandbox(tmp_path / "b", seed=3, evaluate=False, progress=False, **TINY)
    assert again.weights_sha256 == tiny.weights_sha256
    for name in ("eval/qab.jsonl", "prompts/train.jsonl", "model/tokenizer.json"):
        assert (tmp_path / "b" / name).read_bytes() == (Path(tiny.out) / name).read_bytes()
    other = build_sandbox(tmp_path / "c", seed=4, evaluate=False, progress=False, **TINY)
    assert other.weights_sha256 != tiny.weights_sha256


def test_cli_builds(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from polyrise import cli

    def fake_build(out, seed, **kw):
        assert kw["mix"] == replace(DataMix(), clone_task=5) and kw["train"].epochs == 0.5
        assert kw["align"] == AlignSettings(pairs=900)
        return SandboxInfo(
            out=str(out), seed=seed, languages=LANGS, clones=dict(CLONES), mix={}, model_size={}, train={},
            sizes={}, accuracy={"en": 0.9, "qaa": 0.5, "qab": 0.4}, gap={"qaa": 0.4, "qab": 0.5},
            translation_exact={"en-qaa": 0.7}, seconds={"total": 3.0, "train": 2.0, "align": 1.0},
        )  # fmt: skip

    monkeypatch.setattr("polyrise.sandbox.build_sandbox", fake_build)
    args = ["sandbox", "build", "--out", str(tmp_path), "--seed", "2", "--clone-task", "5", "--epochs", "0.5"]
    result = CliRunner().invoke(cli.app, [*args, "--align-pairs", "900"])
    assert result.exit_code == 0, result.output
    qab = next(line for line in result.output.splitlines() if " qab " in line)
    assert "0.400" in qab and "+0.500" in qab
    assert "0.700" in next(line for line in result.output.splitlines() if " qaa " in line)
    assert "built in 3 s (training 2 s, English alignment 1 s)" in result.output


@pytest.fixture(scope="module")
def seed0_sandbox(tmp_path_factory) -> Path:
    """The real default build for seed 0 (about 2 CPU-minutes), shared by the slow tests below."""
    out = tmp_path_factory.mktemp("study") / "sandbox-seed0"
    build_sandbox(out, seed=0, progress=False)
    return out


@pytest.mark.slow
def test_default_build_has_the_imbalance(seed0_sandbox):
    """English clearly above every clone.

    Measured for seeds 0-5 (docs/sandbox.md): English 0.980-1.000, gaps 0.245-0.810 (seed 0: 0.345 and 0.535).
    The bounds keep about 0.15 below seed 0's: 4 standard errors of an accuracy near 0.6 on 200 problems, room for
    another CPU's floating-point results (the weights are byte-identical only on the same machine and threads).
    """
    info = json.loads((seed0_sandbox / "sandbox.json").read_text())
    assert info["accuracy"]["en"] >= 0.9
    for code in CLONES:
        assert info["gap"][code] >= 0.2, info["gap"]


@pytest.mark.slow
def test_three_rewarding_iterations_keep_the_measured_direction(seed0_sandbox, tmp_path):
    """`polyrise run examples/sandbox.yaml` on seed 0 for 3 iterations (about 3 CPU-minutes), as in the study.

    What would fail if the reward were uninformative or the loop did nothing, with bounds from the 4-seed study of
    2026-12-02 (`polyrise sandbox study --seeds 0,1,2,3 --variants rewarding,swapped`, OMP_NUM_THREADS=1; table in
    docs/sandbox.md):
    - the reward: M0's pairs prefer the right answer in 0.965-1.000 of the informative pairs (one side right) in
      every row (seed 0: 1.000 on 79-127 pairs per row); the bound is 0.9 on at least 30 informative pairs. The
      swapped control trains on the complement of the same pairs (measured 0.002-0.009), so this is also
      "rewarding well above the swapped control".
    - a measured change: the summed |M3 - M0| over English and the clones is 0 for a loop that changes nothing; seed 0
      moved 0.515 (qaa +0.140, qab -0.375); the bound is 0.05.
    - no collapse: English M3 - M0 -0.038 ± 0.068 over the seeds (seed 0: +0.000), the clones' mean +0.083 (seed 0:
      -0.117, the lowest); both bounds stay at -0.15. The swapped control ended at English -0.312 ± 0.085.
    """
    import io

    import torch
    from rich.console import Console

    from polyrise.config import load_config
    from polyrise.reporting import collect_scores
    from polyrise.runner import run_pipeline
    from polyrise.sandbox.study import study_config

    example = Path(__file__).resolve().parents[1] / "examples" / "sandbox.yaml"
    cfg = study_config(load_config(example), seed0_sandbox, 0, "rewarding", tmp_path, iterations=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the study ran (OMP_NUM_THREADS=1)
    try:
        run_pipeline(cfg, Console(file=io.StringIO()))
    finally:
        torch.set_num_threads(threads)
    scores = collect_scores(cfg.run_dir)
    acc = {label: {lang: c["accuracy"] for lang, c in rows.items()} for label, rows in scores["mgsm"].items()}
    reward = {row: (c["reward_accuracy"], c["informative"]) for row, c in scores["reward"]["M0"].items()}
    print(f"M0's reward accuracy (informative pairs): {reward}")
    english = acc["M3"]["en"] - acc["M0"]["en"]
    clones = statistics.fmean(acc["M3"][c] - acc["M0"][c] for c in CLONES)
    print(f"seed 0, M3 - M0: English {english:+.3f} (study: +0.000), clones' mean {clones:+.3f} (study: -0.117)")
    assert set(reward) == {"qaa", "qab", "en/qaa", "en/qab"}
    for row, (accuracy, informative) in reward.items():
        assert accuracy >= 0.9 and informative >= 30, (row, reward)
    moved = sum(abs(acc["M3"][lang] - acc["M0"][lang]) for lang in acc["M0"])
    assert moved >= 0.05, acc
    assert english >= -0.15, acc
    assert clones >= -0.15, acc


@pytest.mark.parametrize("killed_in", ["pretrain", "_save_model", "align_english", "measure_alignment", "measure_m0"])
def test_a_killed_rebuild_leaves_no_complete_looking_mix(tiny, tmp_path, monkeypatch, killed_in):
    """A rebuild over an old sandbox that dies anywhere leaves no `sandbox.json` (a study rebuilds it) and never a
    mix of the two builds' files; the next build completes and cleans up."""
    import shutil

    import polyrise.sandbox.build as build

    out = tmp_path / "a"
    shutil.copytree(tiny.out, out)
    old = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "sandbox.json"}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(build, killed_in, killed)
        with pytest.raises(KeyboardInterrupt):
            build_sandbox(out, seed=4, progress=False, **TINY)
    assert not (out / "sandbox.json").exists()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == old  # the old build's
    info = build_sandbox(out, seed=4, evaluate=False, progress=False, **TINY)
    assert json.loads((out / "sandbox.json").read_text())["seed"] == 4 and info.out == str(out)
    assert info.weights_sha256 == build.file_hash(out / "model" / "model.safetensors") != tiny.weights_sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no staging or old build left beside it
