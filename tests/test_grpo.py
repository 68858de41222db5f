"""GRPOAgent: group advantages, a smoke run with a tiny LM, checkpoints, the REINFORCE seam, learning (slow)."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
import torch

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents.base import evaluate
from aligngym.agents.grpo import GRPOAgent, GRPOConfig, group_advantages
from aligngym.agents.policies import CausalLMPolicy, tiny_causal_lm
from aligngym.envs.core import runtime_of

ENV = "aligngym/Keywords-Sequence-v0"


def _tiny(env) -> torch.nn.Module:
    rt = runtime_of(env)
    return tiny_causal_lm(rt.vocab_size, eos_token_id=rt.eos_id, seed=0)


def test_group_advantages():
    scores = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    adv = group_advantages(scores, "group")
    assert torch.allclose(adv[0].mean(), torch.tensor(0.0)) and torch.allclose(adv[1], torch.zeros(4))
    assert adv[0, 0] > 0 > adv[0, 1]
    rloo = group_advantages(torch.tensor([[1.0, 0.0, 0.0]]), "rloo")
    torch.testing.assert_close(rloo, torch.tensor([[1.0, -0.5, -0.5]]))  # r_i - mean of the other two
    torch.testing.assert_close(
        group_advantages(torch.tensor([[1.0, 0.0]]), "mean"), torch.tensor([[0.5, -0.5]])
    )


def test_smoke_run_logs_and_scores_groups():
    env = gym.make(ENV, max_new_tokens=6)
    agent = GRPOAgent(
        env, GRPOConfig(policy=_tiny(env), num_generations=4, prompts_per_update=2, device="cpu")
    )
    batch = agent.collect(agent._vector_env())
    assert batch["actions"].shape == (8, 6) and batch["scores"].shape == (2, 4)
    agent.learn(16)
    assert agent.num_timesteps == 16 and agent.num_updates == 2
    for key in ("charts/score", "charts/kl", "losses/policy_loss", "losses/approx_kl", "losses/clipfrac"):
        assert np.isfinite(agent.logger.latest(key)), key
    obs, _ = env.reset(seed=0)
    action, _ = agent.predict(obs)
    assert env.action_space.contains(action)


def test_group_shares_one_prompt():
    env = gym.make(ENV, max_new_tokens=4)
    agent = GRPOAgent(
        env, GRPOConfig(policy=_tiny(env), num_generations=3, prompts_per_update=2, device="cpu")
    )
    batch = agent.collect(agent._vector_env())
    ids = batch["prompt_ids"].reshape(2, 3, -1)
    assert (ids == ids[:, :1]).all()


def test_token_env_is_refused():
    env = gym.make("aligngym/Keywords-Token-v0", max_new_tokens=4)
    with pytest.raises(TypeError, match="sequence-level"):
        GRPOAgent(env, GRPOConfig(policy=_tiny(env), device="cpu"))


def test_save_load_round_trip_and_rebuilt_reference(tmp_path):
    env = gym.make(ENV, max_new_tokens=4)
    agent = GRPOAgent(
        env, GRPOConfig(policy=_tiny(env), num_generations=2, prompts_per_update=2, device="cpu")
    )
    agent.learn(4).save(tmp_path / "ck")
    back = GRPOAgent.load(tmp_path / "ck", env)
    for (k, a), (_, b) in zip(agent.policy.state_dict().items(), back.policy.state_dict().items()):
        assert torch.equal(a, b), k
    for (k, a), (_, b) in zip(agent.reference.state_dict().items(), back.reference.state_dict().items()):
        assert torch.equal(a, b), k  # the frozen reference comes back too, not the trained policy


def test_rloo_runs_on_the_native_vector_env():
    venv = gym.make_vec(ENV, num_envs=4, max_new_tokens=4)
    cfg = GRPOConfig(
        policy=_tiny(venv), num_generations=4, prompts_per_update=1, advantage="rloo", beta=0.0, device="cpu"
    )
    agent = GRPOAgent(venv, cfg).learn(8)
    assert agent.reference is None and np.isfinite(agent.logger.latest("losses/policy_loss"))


@pytest.mark.skipif(
    importlib.util.find_spec("aligngym.agents.reinforce") is None,
    reason="agents/reinforce.py not written yet",
)
def test_reinforce_agent_accepts_a_causal_lm_policy(tmp_path):
    from aligngym.agents.reinforce import ReinforceAgent, ReinforceConfig

    env = gym.make("aligngym/Target-Token-v0")
    policy = CausalLMPolicy.for_env(env, _tiny(env))
    agent = ReinforceAgent(
        env, ReinforceConfig(policy=policy, baseline="value", num_envs=2, episodes_per_env=1, device="cpu")
    )
    agent.learn(8)
    assert np.isfinite(agent.logger.latest("losses/policy_loss"))
    agent.save(tmp_path / "r")
    back = ReinforceAgent.load(tmp_path / "r", env, policy=CausalLMPolicy.for_env(env, _tiny(env)))
    obs, _ = env.reset(seed=0)
    assert agent.predict(obs, deterministic=True)[0] == back.predict(obs, deterministic=True)[0]


@pytest.mark.slow
def test_grpo_raises_keyword_coverage_on_the_test_prompts():
    """From the shipped reference model: keyword coverage on the held-out TEST prompts goes up, KL stays bounded.

    Train prompts would overstate the gain (their keyword rows are in the reference's pretraining data): in this
    budget coverage on the train batches roughly doubles while the test prompts gain a few points only.
    """
    train_env = gym.make(ENV)
    test_env = gym.make(ENV, split="test")
    cfg = GRPOConfig(
        device="cpu", seed=0, num_generations=16, prompts_per_update=2, learning_rate=3e-4, beta=0.04
    )
    agent = GRPOAgent(train_env, cfg)
    n = 16 * len(test_env.unwrapped.runtime.rows)  # sampled: coverage is noisy per episode
    before = evaluate(agent, test_env, n_episodes=n, deterministic=False, seed=5)["mean_score"]
    agent.learn(4000)
    after = evaluate(agent, test_env, n_episodes=n, deterministic=False, seed=5)["mean_score"]
    train_batches = float(np.mean([r["charts/score"] for r in agent.logger.history[-20:]]))
    kl = float(np.mean([r["charts/kl"] for r in agent.logger.history[-5:]]))
    print(
        f"GRPO keyword coverage on test prompts: {before:.3f} -> {after:.3f} (last train batches "
        f"{train_batches:.3f}), KL {kl:.2f}"
    )
    assert after > before + 0.02
    assert kl < 20.0


@pytest.mark.gpu
def test_grpo_runs_on_cuda():
    env = gym.make(ENV, max_new_tokens=4)
    cfg = GRPOConfig(policy=_tiny(env), num_generations=2, prompts_per_update=2, device="cuda")
    agent = GRPOAgent(env, cfg).learn(4)
    assert np.isfinite(agent.logger.latest("losses/policy_loss"))
