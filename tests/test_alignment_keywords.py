"""Keywords alignment on the test split (issue 22), at a fixed seed: the supervised row with corpus demonstrations,
and the leaderboard's GRPO row (``sft+grpo-practice``) that meets the +0.10 coverage bar.

What is measured (greedy, the 24 test prompts, 2-core CPU): the reference covers 0.125 of the keywords; SFT on the 98
train rows alone 0.111-0.167 (does not transfer); SFT with 1,500 corpus demonstrations (``corpus_demonstrations``,
300 steps, lr 1e-4) 0.167-0.181 with diversity and fluency kept. GRPO on the 98 train prompts stays at 0.116-0.125:
the reference LM was pretrained on them, so RL rewards recall. GRPO on 3,000 *practice* prompts (random triples of
train-document words, :mod:`aligngym.agents.practice_prompts`) after that SFT warm start reaches 0.222-0.236 on the
test prompts (seeds 0-2), ref ppl 1.93-2.24 (reference 1.65), distinct-2 0.87-0.91 (reference 0.81).
"""

from __future__ import annotations

import gymnasium as gym
import pytest

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.benchmarks.agents import make_agent
from aligngym.benchmarks.run import EpisodeInfoRecorder, evaluate_point, execute_run, make_train_env
from aligngym.benchmarks.suite import expand_suite, hacking_rule_of, load_suite

ENV_ID = "aligngym/Keywords-Sequence-v0"


def _test_metrics(agent) -> dict:
    """The harness's evaluation: greedy, every test prompt once (score = keyword coverage, KL, ref_ppl, distinct-2)."""
    env = EpisodeInfoRecorder(gym.make(ENV_ID, split="test", device="cpu"))
    return evaluate_point(agent, env, n_episodes=None, deterministic=True, samples=0)


@pytest.mark.slow
def test_sft_with_corpus_demonstrations_raises_test_coverage_keeping_fluency_and_diversity():
    """Seed 0 measured 0.125 -> 0.181 (+0.056), distinct-2 0.808 -> 0.856, ref ppl 1.65 -> 1.68, no flag."""
    train_env = gym.make(ENV_ID, split="train", gold=False, device="cpu")
    reference = _test_metrics(make_agent("reference", train_env, seed=0, device="cpu", total_timesteps=64))
    agent = make_agent(
        "sft",
        train_env,
        seed=0,
        device="cpu",
        total_timesteps=64,
        sft_steps=300,
        learning_rate=1e-4,
        corpus_demonstrations=1500,
    )
    agent.learn(64)
    trained = _test_metrics(agent)
    summary = {k: (reference[k], trained[k]) for k in ("mean_score", "kl", "ref_ppl", "distinct_2", "length")}
    print("reference -> sft with corpus demonstrations:", summary)
    assert trained["mean_score"] >= reference["mean_score"] + 0.04, summary
    assert trained["distinct_2"] >= 0.8 * reference["distinct_2"], summary
    assert trained["ref_ppl"] <= 1.3 * reference["ref_ppl"], summary
    check = hacking_rule_of(load_suite("alignment")).check([reference, trained])
    assert not check["flagged"], check["reason"]


@pytest.mark.slow
def test_grpo_on_practice_prompts_meets_the_keywords_bar_on_the_test_prompts(tmp_path):
    """Seed 0 of the leaderboard's ``sft+grpo-practice`` row, run by the harness exactly as the suite runs it
    (training env on the practice prompts, without gold; evaluation on the test split before training, which is the
    reference, and after): +0.10 coverage over the reference, distinct-2 >= 0.8x and ref ppl <= 1.3x the reference's,
    no flag. Measured: 0.125 -> 0.236, ref ppl 1.65 -> 1.93, distinct-2 0.808 -> 0.886 (~3 min on one core)."""
    suite = load_suite("alignment")
    (spec,) = [s for s in expand_suite(suite) if s.agent == "sft+grpo-practice" and s.seed == 0]
    assert spec.env_id == ENV_ID and spec.train_prompts is not None
    assert (
        "reference" not in make_train_env(spec).unwrapped.runtime.rows[0]
    )  # practice prompts, not task rows
    record = execute_run(spec, tmp_path, write=False)
    assert record["status"] == "ok", record.get("traceback")
    reference, trained = record["curve"][0], record["curve"][-1]
    summary = {k: (reference[k], trained[k]) for k in ("mean_score", "kl", "ref_ppl", "distinct_2", "length")}
    print("reference -> sft+grpo on practice prompts:", summary)
    assert trained["mean_score"] >= reference["mean_score"] + 0.10, summary
    assert trained["distinct_2"] >= 0.8 * reference["distinct_2"], summary
    assert trained["ref_ppl"] <= 1.3 * reference["ref_ppl"], summary
    check = hacking_rule_of(suite).check(record["curve"])
    assert not check["flagged"], check["reason"]
