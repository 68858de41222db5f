"""Keywords alignment on the test split (issue 22): the supervised row with corpus demonstrations, at a fixed seed.

What is measured (greedy, the 24 test prompts, 2-core CPU): the reference covers 0.125 of the keywords; SFT on the 98
train rows alone 0.111-0.167 (does not transfer); SFT with 1,500 corpus demonstrations (``corpus_demonstrations``,
300 steps, lr 1e-4) 0.167-0.181 with diversity and fluency kept. Issue 22's +0.10 bar for PPO/GRPO is **not** met: GRPO
(lr 2e-4, beta 0.04, 1,024-3,072 completions; train prompts or recombined train keywords) stays at 0.125-0.181.
"""

from __future__ import annotations

import gymnasium as gym
import pytest

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.benchmarks.agents import make_agent
from aligngym.benchmarks.run import EpisodeInfoRecorder, evaluate_point
from aligngym.benchmarks.suite import hacking_rule_of, load_suite

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
