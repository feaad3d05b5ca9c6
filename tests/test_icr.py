"""Implicit Cross-Lingual Rewarding: the reward's arithmetic against direct forward passes, the alpha search, pair
selection, config errors, and one iteration end to end on a tiny model."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from test_pipeline import _config

from polyrise.config import load_config
from polyrise.errors import PolyriseError
from polyrise.io import read_jsonl
from polyrise.methods.implicit_cross_lingual import (
    ImplicitRewardSettings,
    build_pairs,
    choose_alpha,
    implicit_rewards,
    select_pair,
)
from polyrise.records import PreferencePair, Samples, SampleScores
from polyrise.runner import Runner


def _reference_optimize_alpha(scores, lengths, grid):
    """The released code's `optimize_alpha` (utils/generate_preference_pair.py), loop for loop."""
    best_alpha, min_avg_diff = 0.0, float("inf")
    for alpha in grid:
        adjusted = [
            [s - alpha * n for s, n in zip(ss, ns, strict=True)] for ss, ns in zip(scores, lengths, strict=True)
        ]
        chosen = [int(np.argmax(a)) for a in adjusted]
        rejected = [int(np.argmin(a)) for a in adjusted]
        diff = np.mean([ns[c] - ns[r] for c, r, ns in zip(chosen, rejected, lengths, strict=True)])
        if abs(diff) < abs(min_avg_diff):
            min_avg_diff, best_alpha = diff, alpha
    return best_alpha, min_avg_diff


def _arrays(rows):
    return [np.array(r, float) for r in rows]


def test_alpha_search_by_hand():
    grid = np.array([0.0, 0.5, 1.0])
    # alpha 0: chosen len 10, rejected len 6 (gap 4); 0.5: 2 vs 6 (-4); 1: 2 vs 10 (-8): |4| = |-4|, the first wins
    assert choose_alpha(_arrays([[3, 1, 0]]), _arrays([[10, 2, 6]]), grid) == (0.0, 4.0)
    # alpha 1 makes both rewards -2: argmax and argmin are the first sample, gap 0 (the code's rule, pair or not)
    assert choose_alpha(_arrays([[2, 0]]), _arrays([[4, 2]]), np.array([0.0, 0.5, 1.0, 1.5])) == (1.0, 0.0)
    # equal lengths: every alpha gives gap 0, the first is kept
    assert choose_alpha(_arrays([[1, 5, 2], [0, 1, 9]]), _arrays([[3, 3, 3], [7, 7, 7]]), grid) == (0.0, 0.0)
    # prompts with one sample take no part; none left: alpha 0
    assert choose_alpha(_arrays([[5, 1], [9]]), _arrays([[1, 5], [100]]), grid) == (0.0, -4.0)  # not -4 / 2
    assert choose_alpha(_arrays([[9]]), _arrays([[100]]), grid) == (0.0, 0.0)


def test_alpha_search_matches_the_released_code():
    rng = random.Random(3)
    grid = np.arange(0.0, 1.0, 0.01)
    for _ in range(20):
        scores = [[rng.gauss(0, 20) for _ in range(5)] for _ in range(8)]
        lengths = [[rng.randint(5, 120) for _ in range(5)] for _ in range(8)]
        alpha, gap = choose_alpha(_arrays(scores), _arrays(lengths), grid)
        ref_alpha, ref_gap = _reference_optimize_alpha(scores, lengths, grid)
        assert alpha == pytest.approx(ref_alpha) and gap == pytest.approx(ref_gap)


def test_pair_selection():
    assert select_pair(np.array([1.0, 3.0, 3.0, 0.0])) == (1, 3)  # first argmax
    assert select_pair(np.array([2.0, 1.0, 1.0])) == (0, 1)  # first argmin
    assert select_pair(np.array([0.5, 0.5, 0.5])) == "equal_rewards"
    assert select_pair(np.array([4.0])) == "single_sample"
    assert list(implicit_rewards([-3.0, -5.0], [-4.0, -4.5])) == [1.0, -0.5]


def test_build_pairs_counts_drops_and_lengths():
    settings = ImplicitRewardSettings(reference="ref", length_control=False)
    samples = [
        Samples(id="a", lang="es", prompt="pa", outputs=["xx", "yyyy", "z"]),
        Samples(id="b", lang="es", prompt="pb", outputs=["only"]),
        Samples(id="c", lang="es", prompt="pc", outputs=["u", "vv"]),
    ]
    scores = [
        SampleScores(id="a", lang="es", context="c", policy=[-1.0, -2.0, -9.0], reference=[-2.0, -1.0, -3.0]),
        SampleScores(id="b", lang="es", context="c", policy=[-1.0], reference=[-1.0]),
        SampleScores(id="c", lang="es", context="c", policy=[-1.0, -2.0], reference=[-1.0, -2.0]),
    ]
    prompts = {("a", "es"): "pa", ("b", "es"): "pb", ("c", "es"): "pc"}
    pairs, stats = build_pairs(samples, scores, prompts, ["es"], settings)
    # a: rewards 1, -1, -6 → chosen "xx", rejected "z"
    assert pairs == [PreferencePair(id="a", lang="es", via="es", prompt="pa", chosen="xx", rejected="z")]
    s = stats["es"]
    assert (s["candidates"], s["kept"], s["dropped"]) == (3, 1, {"single_sample": 1, "equal_rewards": 1})
    assert (s["alpha"], s["margin"], s["raw_margin"]) == (0.0, 7.0, 7.0)
    assert (s["chosen_length"], s["rejected_length"]) == (2.0, 1.0)

    # length control: alpha > 0 makes "c"'s equal rewards unequal (the shorter one wins) and pairs it
    controlled = ImplicitRewardSettings(reference="ref", alpha_max=2.0, alpha_step=0.5)
    pairs, stats = build_pairs(samples, scores, prompts, ["es"], controlled)
    assert stats["es"]["alpha"] > 0 and stats["es"]["kept"] == 2
    assert pairs[1].chosen == "u" and pairs[1].rejected == "vv"


def test_random_pairing_is_seeded_and_not_the_rewards_choice():
    rng = np.random.default_rng(0)
    samples, scores, prompts = [], [], {}
    for i in range(30):
        samples.append(Samples(id=f"p{i}", lang="es", prompt=f"q{i}", outputs=[f"a{i}-{j}" for j in range(6)]))
        policy = list(rng.normal(size=6))
        scores.append(SampleScores(id=f"p{i}", lang="es", context="c", policy=policy, reference=[0.0] * 6))
        prompts[(f"p{i}", "es")] = f"q{i}"
    # the same prompts drop: all rewards equal (copies of one answer), a single sample; copies never pair up
    samples += [
        Samples(id="same", lang="es", prompt="qs", outputs=["x", "x", "x"]),
        Samples(id="one", lang="es", prompt="qo", outputs=["y"]),
        Samples(id="dup", lang="es", prompt="qd", outputs=["u", "u", "u", "v"]),
    ]
    scores += [
        SampleScores(id="same", lang="es", context="c", policy=[-1.0] * 3, reference=[0.0] * 3),
        SampleScores(id="one", lang="es", context="c", policy=[-1.0], reference=[0.0]),
        SampleScores(id="dup", lang="es", context="c", policy=[-1.0] * 3 + [-2.0], reference=[0.0] * 4),
    ]
    prompts |= {("same", "es"): "qs", ("one", "es"): "qo", ("dup", "es"): "qd"}
    by_reward, reward_stats = build_pairs(samples, scores, prompts, ["es"], ImplicitRewardSettings(reference="r"))
    settings = ImplicitRewardSettings(reference="r", pairing="random")
    drawn, stats = build_pairs(samples, scores, prompts, ["es"], settings, seed=(7, 1))
    assert drawn == build_pairs(samples, scores, prompts, ["es"], settings, seed=(7, 1))[0]  # seeded
    assert (stats["es"]["kept"], stats["es"]["dropped"]) == (31, {"single_sample": 1, "equal_rewards": 1})
    assert stats["es"]["dropped"] == reward_stats["es"]["dropped"]
    assert all(p.chosen != p.rejected for p in drawn) and {drawn[-1].chosen, drawn[-1].rejected} == {"u", "v"}
    assert [(p.id, p.prompt) for p in drawn] == [(p.id, p.prompt) for p in by_reward]  # the same prompts
    picked = [(p.chosen, p.rejected) for p in drawn]
    assert sum(a == b for a, b in zip(picked, [(p.chosen, p.rejected) for p in by_reward], strict=True)) < 6
    assert picked != [(p.chosen, p.rejected) for p in build_pairs(samples, scores, prompts, ["es"], settings)[0]]
    # symmetric: an answer sampled 4 times of 5 is no likelier chosen than rejected (not a majority vote)
    majority = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
    draws = [select_pair(majority, np.random.default_rng(i)) for i in range(400)]
    assert all(2 in pair for pair in draws)
    assert 0.4 < sum(pair[0] == 2 for pair in draws) / len(draws) < 0.6
    # a prompt's pair depends on the prompt and the seed alone, not on the other prompts
    alone = build_pairs(samples[3:4], scores[3:4], prompts, ["es"], settings, seed=(7, 1))[0]
    assert alone == [drawn[3]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"method": "implicit-cross-lingual"}, "needs an `implicit_reward` section"),
        ({"implicit_reward": {"reference": "x"}}, "only used by method 'implicit-cross-lingual'"),
        (
            {"method": "question-alignment", "alignment": {"train": ["es"]}, "implicit_reward": {"reference": "x"}},
            "only used by method 'implicit-cross-lingual'",
        ),
        (
            {"method": "implicit-cross-lingual", "implicit_reward": {"reference": "x", "samples": 0}},
            "implicit_reward.samples",
        ),
        ({"method": "implicit-cross-lingual", "implicit_reward": {"reference": "x", "k": 3}}, "implicit_reward.k"),
        ({"method": "implicit-cross-lingual", "implicit_reward": {}}, "implicit_reward.reference"),
        (
            {"method": "implicit-cross-lingual", "implicit_reward": {"reference": "x", "variant": "translated"}},
            "implicit_reward.variant",
        ),
        (
            {"method": "implicit-cross-lingual", "implicit_reward": {"reference": "x", "pairing": "best"}},
            "implicit_reward.pairing",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path, tiny_model_dir, extra, message):
    with pytest.raises(PolyriseError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_config(_config(tmp_path, tiny_model_dir, **extra))


@pytest.fixture
def reference_dir(tmp_path, tiny_model_dir) -> Path:
    """The tiny Llama with every weight perturbed: a reference whose log-probs differ from the policy's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    out = tmp_path / "reference"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def _direct_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """Summed log-prob of the continuation's tokens by one plain forward pass (lm-eval's split of the text)."""
    whole = tokenizer(context + continuation)["input_ids"]
    n = len(tokenizer(context)["input_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].float()
    logps = torch.log_softmax(logits[:-1], dim=-1).gather(-1, torch.tensor(whole[1:]).unsqueeze(-1)).squeeze(-1)
    return float(logps[n - 1 :].sum())


def test_one_iteration_end_to_end(tmp_path, tiny_model_dir, reference_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    icr = {"reference": str(reference_dir), "samples": 3, "sampling": {"temperature": 1.0, "max_new_tokens": 8}}
    path = _config(
        tmp_path,
        tiny_model_dir,
        method="implicit-cross-lingual",
        implicit_reward=icr,
        languages=["es"],
        heldout=None,
        stage_processes=False,
    )
    runner = Runner(load_config(path), Console(file=io.StringIO()))
    # by default (the released code's) the configured reference in every iteration
    assert [runner.method.reference_spec(t) for t in range(3)] == [str(reference_dir)] * 3
    (tmp_path / "previous").mkdir()
    other = icr | {"reference_after_first": "previous"}
    other_path = _config(tmp_path / "previous", tiny_model_dir, method="implicit-cross-lingual", implicit_reward=other)
    previous = Runner(load_config(other_path), Console(file=io.StringIO()))
    assert previous.method.reference_spec(0) == str(reference_dir)
    # then the previous iteration's policy: M0 for iteration 1 (whose policy is M1), M1 for iteration 2
    assert previous.method.reference_spec(1) == str(tiny_model_dir)
    assert previous.model_spec(1) == str(previous.layout.model_dir(0))
    assert previous.method.reference_spec(2) == str(previous.layout.model_dir(0))
    runner.run()
    it = runner.layout.iter_dir(0)
    manifest = json.loads((runner.run_dir / "manifest.json").read_text())["stages"]
    assert list(manifest) == ["iter_0/prompts", "iter_0/sample", "iter_0/score", "iter_0/pairs", "iter_0/train"]
    assert (it / "model").is_dir()

    samples = read_jsonl(it / "samples.jsonl", Samples)
    scores = {(s.id, s.lang): s for s in read_jsonl(it / "sample_scores.jsonl", SampleScores)}
    assert {s.lang for s in samples} == {"en", "es"}
    assert any(len(set(s.outputs)) > 1 for s in samples)  # the k samples differ

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    reference = AutoModelForCausalLM.from_pretrained(reference_dir).eval()
    for s in [*samples[:2], *[s for s in samples if s.lang == "es"][:2]]:
        row = scores[(s.id, s.lang)]
        if s.lang == "en":
            assert s.prompt in row.context and "Please answer" not in row.context
        else:  # cross-lingual: scored under the English instruction with the request to answer in Spanish
            assert "using only Spanish" in row.context and s.prompt not in row.context
        for y, lp, lr in zip(s.outputs, row.policy, row.reference, strict=True):
            assert lp == pytest.approx(_direct_logprob(policy, tokenizer, row.context, y), abs=1e-3)
            assert lr == pytest.approx(_direct_logprob(reference, tokenizer, row.context, y), abs=1e-3)

    pairs = read_jsonl(it / "pairs.jsonl", PreferencePair)
    stats = json.loads((it / "pairs_stats.json").read_text())
    assert sum(s["kept"] for s in stats.values()) == len(pairs) > 0
    by_key = {(s.id, s.lang): s for s in samples}
    for p in pairs:  # chosen = the highest length-controlled reward, rejected = the lowest
        s, row = by_key[(p.id, p.lang)], scores[(p.id, p.lang)]
        alpha = stats[p.lang]["alpha"]
        reward = {y: a - b - alpha * len(y) for y, a, b in zip(s.outputs, row.policy, row.reference, strict=True)}
        assert reward[p.chosen] == max(reward.values()) and reward[p.rejected] == min(reward.values())
        assert p.prompt == s.prompt  # trained on the prompt the answer was sampled for


def test_dry_run_estimates_the_samples_and_scores(tmp_path, tiny_model_dir, reference_dir):
    icr = {"reference": str(reference_dir), "samples": 3}
    path = _config(
        tmp_path, tiny_model_dir, method="implicit-cross-lingual", implicit_reward=icr, languages=["es"], heldout=None
    )
    config = load_config(path)
    runner = Runner(config, Console(file=io.StringIO()))
    work, n = runner.estimate(), len(runner.method.prompts.source)
    # n prompts in en and es, 3 samples each, each scored under the policy and the reference; a pair per prompt
    assert work["source prompts"] == n > 0
    assert work["prompt translations"] == n
    assert work["samples"] == 2 * n * 3 and work["log-likelihoods"] == 2 * 2 * n * 3
    assert work["pairs"] == 2 * n
    assert work["training steps"] == -(-2 * n // config.training.batch_size) * config.training.epochs
    assert not config.run_dir.exists()
