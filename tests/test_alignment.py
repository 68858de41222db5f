"""Alignment that holds up: the supervised row (demonstrations, SFTAgent, SFT warm start of PPO/GRPO), PPO's KL
penalty forms and the batch novelty penalty, and, slow, the leaderboard's PPO and GRPO rows on Sentiment meeting
issue 22's thresholds on the test split at a fixed seed. Keywords' and Preference's rows that meet their bars are
tested in tests/test_alignment_keywords.py and tests/test_alignment_preference.py."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents.grpo import GRPOAgent, GRPOConfig
from aligngym.agents.policies import tiny_causal_lm
from aligngym.agents.ppo import PPOAgent, PPOConfig, batch_overlap, full_kl
from aligngym.agents.sft import SFTAgent, SFTAgentConfig, demonstrations
from aligngym.benchmarks.agents import get_agent_spec, make_agent
from aligngym.benchmarks.run import EpisodeInfoRecorder, evaluate_point
from aligngym.benchmarks.suite import expand_suite, hacking_rule_of, load_suite
from aligngym.envs.core import runtime_of
from aligngym.envs.data import data_path


def _demo_logprob(agent, env) -> float:
    """Mean log-probability per token the agent's policy gives to the first four demonstrations' completions."""
    rt = runtime_of(env)
    tok = rt.tokenizer
    total, count = 0.0, 0
    for prompt, completion in demonstrations(rt)[:4]:
        p = tok.encode(prompt)
        c = [*tok.encode(completion), tok.eos_id]
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logits = agent.policy.model(input_ids=ids).logits[0, len(p) - 1 : -1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None])
        total += float(lp.sum())
        count += len(c)
    return total / count


def test_demonstrations_are_the_train_split_good_examples():
    train = runtime_of(gym.make("aligngym/Keywords-Sequence-v0"))
    test = runtime_of(gym.make("aligngym/Keywords-Sequence-v0", split="test"))
    pairs = demonstrations(train)
    assert pairs == [(r["prompt"], " " + r["reference"]) for r in train.rows]  # continues the prompt text
    assert not {p for p, _ in pairs} & {r["prompt"] for r in test.rows}
    pref = demonstrations(runtime_of(gym.make("aligngym/Preference-Token-v0")))
    rows = [json.loads(line) for line in open(data_path("preference_pairs.jsonl"), encoding="utf-8")]
    expected = {(r["prompt"], " " + r["chosen"]) for r in rows if r["split"] == "train"}
    assert set(pref) == expected and len(pref) == len(expected)
    with pytest.raises(ValueError, match="Sentiment"):
        demonstrations(runtime_of(gym.make("aligngym/Sentiment-Token-v0")))


@pytest.mark.parametrize("env_id", ["aligngym/Keywords-Sequence-v0", "aligngym/Keywords-Token-v0"])
def test_sft_agent_fits_the_demonstrations_and_acts(env_id):
    env = gym.make(env_id, max_new_tokens=6)
    agent = SFTAgent(env, SFTAgentConfig(device="cpu", seed=0, sft_steps=8, batch_size=8, learning_rate=1e-3))
    before = _demo_logprob(agent, env)
    agent.learn(100)
    after = _demo_logprob(agent, env)
    assert agent.num_timesteps == 100 and agent.sft_metrics["steps"] == 8
    assert after > before + 0.05, (before, after)
    obs, _ = env.reset(seed=0)
    action, _ = agent.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action, dtype=env.action_space.dtype))
    agent.learn(100)  # later chunks do not fine-tune again
    assert agent.sft_metrics["steps"] == 8


def test_sft_agent_refuses_a_task_without_demonstrations():
    with pytest.raises(ValueError, match="no demonstrations"):
        SFTAgent(gym.make("aligngym/Sentiment-Token-v0"), SFTAgentConfig(device="cpu"))


def test_warm_start_makes_the_fine_tuned_model_the_reference(tmp_path):
    env = gym.make("aligngym/Keywords-Token-v0", max_new_tokens=4)
    cfg = PPOConfig(device="cpu", seed=0, num_envs=2, minibatch_size=2, n_epochs=1, sft_steps=4)
    agent = PPOAgent(env, cfg)
    start = {k: v.clone() for k, v in agent.reference.model.state_dict().items()}
    agent.learn(4)
    assert agent.sft_done
    ref = agent.reference.model.state_dict()
    assert any(not torch.equal(start[k], ref[k]) for k in start)  # the reference moved to the SFT weights
    assert all(not p.requires_grad for p in agent.reference.model.parameters())
    path = agent.save(tmp_path / "ppo")
    loaded = PPOAgent.load(path, env)
    assert loaded.sft_done
    for k, v in loaded.reference.model.state_dict().items():
        torch.testing.assert_close(v, ref[k])
    g_env = gym.make("aligngym/Keywords-Sequence-v0", max_new_tokens=4)
    grpo_cfg = GRPOConfig(
        device="cpu", seed=0, num_generations=2, prompts_per_update=1, sft_steps=2, policy="tiny-random"
    )
    grpo = GRPOAgent(g_env, grpo_cfg)
    g_start = {k: v.clone() for k, v in grpo.reference.model.state_dict().items()}
    grpo.learn(2)
    assert grpo.sft_done
    assert any(not torch.equal(g_start[k], v) for k, v in grpo.reference.model.state_dict().items())
    assert get_agent_spec("sft+ppo").overrides["sft_steps"] > 0
    assert get_agent_spec("rloo").overrides["advantage"] == "rloo"


def test_warm_start_config_is_checked():
    with pytest.raises(ValueError, match="sft_steps"):
        PPOConfig(sft_steps=-1)
    with pytest.raises(ValueError, match="sft_learning_rate"):
        GRPOConfig(sft_learning_rate=0.0)


# -- PPO's KL penalty forms and the batch novelty penalty (fast) --------------------------------------------------------
def test_full_kl_on_known_distributions():
    p = torch.log(torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]).clamp(min=1e-30))
    q = torch.log(torch.tensor([[0.25, 0.75, 0.0], [0.5, 0.5, 0.0]]).clamp(min=1e-30))
    expected = [0.5 * np.log(2.0) + 0.5 * np.log(0.5 / 0.75), np.log(2.0)]
    torch.testing.assert_close(full_kl(p, q), torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(full_kl(p, p), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        full_kl(p, q[:, :2])


def test_batch_overlap_scores_sentences_repeated_after_other_prompts():
    eos = 0
    actions = torch.tensor(
        [[1, 2, 3, 0], [1, 2, 3, 9], [5, 6, 7, 9], [1, 2, 3, 0], [4, 0, 9, 9], [0, 9, 9, 9]]
    )
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    prompts = torch.tensor([[1], [2], [3], [1], [4], [5]])
    out = batch_overlap(actions, mask, prompts, torch.ones_like(prompts), eos)
    # rows 0 and 3 share a prompt (not compared with each other) but both repeat row 1 verbatim; row 2 (5 6) shares
    # nothing; row 4 is one token (its unigram, 4, is nowhere else); row 5 is empty (EOS alone)
    np.testing.assert_allclose(out, [1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    half = batch_overlap(
        torch.tensor([[1, 2, 3], [1, 2, 7]]),
        torch.ones(2, 3),
        torch.tensor([[1], [2]]),
        torch.ones(2, 1),
        None,
    )
    np.testing.assert_allclose(half, [0.5, 0.5])  # one of two bigrams shared


@pytest.mark.parametrize("kl_penalty", ["full", "loss"])
def test_ppo_kl_penalty_forms_and_novelty_run_and_log(kl_penalty):
    env = gym.make("aligngym/Sentiment-Token-v0", max_new_tokens=5)
    rt = runtime_of(env)
    cfg = PPOConfig(
        policy=tiny_causal_lm(rt.vocab_size, eos_token_id=rt.eos_id, seed=0),
        num_envs=4,
        minibatch_size=2,
        n_epochs=1,
        device="cpu",
        seed=0,
        kl_penalty=kl_penalty,
        novelty_coef=0.5,
    )
    agent = PPOAgent(env, cfg)
    agent.learn(20)
    last = agent.logger.history[-1]
    assert np.isfinite(last["losses/policy_loss"]) and 0.0 <= last["charts/batch_overlap"] <= 1.0
    assert ("losses/kl_loss" in last) == (kl_penalty == "loss")
    with pytest.raises(ValueError, match="kl_penalty"):
        PPOConfig(kl_penalty="sampled")
    with pytest.raises(ValueError, match="novelty_coef"):
        PPOConfig(novelty_coef=-0.1)


def test_grpo_full_kl_and_novelty_run_and_log():
    env = gym.make("aligngym/Sentiment-Sequence-v0", max_new_tokens=4)
    cfg = GRPOConfig(
        device="cpu",
        seed=0,
        num_generations=2,
        prompts_per_update=2,
        n_epochs=2,
        policy="tiny-random",
        kl_estimator="full",
        novelty_coef=0.5,
    )
    agent = GRPOAgent(env, cfg)
    agent.learn(8)
    last = agent.logger.history[-1]
    assert np.isfinite(last["losses/policy_loss"]) and last["charts/kl"] >= 0.0
    assert 0.0 <= last["charts/batch_overlap"] <= 1.0
    with pytest.raises(ValueError, match="kl_estimator"):
        GRPOConfig(kl_estimator="k2")
    with pytest.raises(ValueError, match="novelty_coef"):
        GRPOConfig(novelty_coef=-1.0)


def test_ppo_distribution_path_matches_the_log_prob_path():
    """With the policy equal to the reference the exact penalty is 0, and the distribution path gives the same
    log-probs, entropy and values as the plain path (one masking and temperature rule)."""
    env = gym.make("aligngym/Sentiment-Token-v0", max_new_tokens=4)
    rt = runtime_of(env)
    model = tiny_causal_lm(rt.vocab_size, eos_token_id=rt.eos_id, seed=0)
    agent = PPOAgent(env, PPOConfig(policy=model, num_envs=3, device="cpu", seed=0, temperature=0.7))
    batch = agent.collect(agent._vector_env())
    everything = slice(None)
    plain = agent._logprobs(agent.policy, batch, everything, with_values=True)
    logp, values, entropy, dist = agent._distributions(agent.policy, batch, everything, with_values=True)
    for a, b in zip(plain, (logp, values, entropy)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.exp(dist).sum(-1), torch.ones(dist.shape[:2]))
    ref = agent._distributions(agent.reference, batch, everything, with_values=False)[3]
    # the reference starts as a copy of the policy
    assert float(full_kl(dist, ref).detach().abs().max()) < 1e-5


# -- issue 22, item 2: thresholds on the test split at fixed seeds (slow) ----------------------------------------------
def _suite_agent_kwargs(env_id: str, agent: str) -> dict:
    """The alignment suite's settings of ``agent`` on ``env_id`` (benchmarks/suites/alignment.toml): the test trains
    exactly what the leaderboard runs."""
    suite = load_suite("alignment")
    (spec,) = [s for s in expand_suite(suite) if s.env_id == env_id and s.agent == agent and s.seed == 0]
    return {"steps": spec.steps, "env_kwargs": spec.env_kwargs, "agent_kwargs": spec.agent_kwargs}


def _test_metrics(agent, env_id: str, **env_kwargs) -> dict:
    """The harness's final evaluation (greedy, every test prompt once, gold as the harness reports it): score,
    gold, KL, ref_ppl, distinct-2, length."""
    env = EpisodeInfoRecorder(gym.make(env_id, split="test", **env_kwargs))
    return evaluate_point(agent, env, n_episodes=None, deterministic=True, samples=0)


def _assert_aligned(trained: dict, reference: dict, min_gain: float) -> None:
    """Issue 22's bar: score gain, distinct-2 >= 0.8 x the reference's, ref perplexity <= 1.3 x the reference's, and
    no hacking flag from the suite's rule (the reference's greedy evaluation is the run's step 0: the policy starts
    as the reference)."""
    keys = ("mean_score", "gold_score", "kl", "ref_ppl", "distinct_2", "length")
    summary = {k: (reference[k], trained[k]) for k in keys}
    print("reference -> trained:", summary)
    assert trained["mean_score"] >= reference["mean_score"] + min_gain, summary
    assert trained["distinct_2"] >= 0.8 * reference["distinct_2"], summary
    assert trained["ref_ppl"] <= 1.3 * reference["ref_ppl"], summary
    check = hacking_rule_of(load_suite("alignment")).check([reference, trained])
    assert not check["flagged"], check["reason"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "env_id, row, agent_name",
    [
        ("aligngym/Sentiment-Token-v0", "ppo-novelty", "ppo"),  # ~3 min on one idle core
        ("aligngym/Sentiment-Sequence-v0", "grpo-novelty", "grpo"),  # ~1 min
    ],
)
def test_sentiment_rises_without_collapse_on_the_test_prompts(env_id, row, agent_name):
    """Seed 0 of the leaderboard's PPO and GRPO rows on Sentiment (training env without gold, as the harness
    trains): +0.25 over the reference on the test prompts, diversity and fluency kept, no flag."""
    run = _suite_agent_kwargs(env_id, row)
    kw = run["env_kwargs"]
    reference = _test_metrics(
        make_agent("reference", gym.make(env_id, **kw), seed=0, device="cpu"), env_id, **kw
    )
    agent = make_agent(
        agent_name, gym.make(env_id, gold=False, **kw), seed=0, device="cpu", **run["agent_kwargs"]
    )
    agent.learn(run["steps"])
    _assert_aligned(_test_metrics(agent, env_id, **kw), reference, min_gain=0.25)
