"""Same seed -> bit-identical learning on CPU for every agent of ours, and identical rollouts from the envs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import aligngym.envs  # noqa: F401  (registers the ids)


def _as_numpy(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        out[k] = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    return out


def _qlearning(seed: int):
    from aligngym.agents.tabular import QLearningAgent

    return QLearningAgent(gym.make("aligngym/Target-Token-v0"), QLearningAgent.Config(seed=seed)), 3000


def _reinforce(seed: int):
    from aligngym.agents.reinforce import ReinforceAgent

    env = gym.make("aligngym/Target-Token-v0")
    return ReinforceAgent(
        env, ReinforceAgent.Config(seed=seed, device="cpu", num_envs=2, episodes_per_env=1)
    ), 24


def _ppo(seed: int):
    from aligngym.agents.policies import tiny_causal_lm
    from aligngym.agents.ppo import PPOAgent

    env = gym.make("aligngym/Sentiment-Token-v0", max_new_tokens=4)
    policy = tiny_causal_lm(env.unwrapped.runtime.vocab_size, seed=0)
    cfg = PPOAgent.Config(seed=seed, device="cpu", policy=policy, num_envs=4, minibatch_size=2, n_epochs=1)
    return PPOAgent(env, cfg), 32


def _grpo(seed: int):
    from aligngym.agents.grpo import GRPOAgent
    from aligngym.agents.policies import tiny_causal_lm

    env = gym.make("aligngym/Keywords-Sequence-v0", max_new_tokens=4)
    policy = tiny_causal_lm(env.unwrapped.runtime.vocab_size, seed=0)
    cfg = GRPOAgent.Config(seed=seed, device="cpu", policy=policy, num_generations=2, prompts_per_update=2)
    return GRPOAgent(env, cfg), 8


AGENTS: dict[str, Callable[[int], Any]] = {
    "qlearning": _qlearning,
    "reinforce": _reinforce,
    "ppo": _ppo,
    "grpo": _grpo,
}


@pytest.mark.parametrize("name", list(AGENTS))
def test_learn_is_bit_exact_for_a_fixed_seed(name: str) -> None:
    runs = []
    for _ in range(2):
        agent, steps = AGENTS[name](seed=7)
        agent.learn(steps)
        runs.append(_as_numpy(agent.state_arrays()))
    a, b = runs
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), f"{name}: {key} differs between two runs with the same seed"


@pytest.mark.parametrize("name", ["qlearning", "reinforce"])
def test_different_seeds_learn_differently(name: str) -> None:
    states = []
    for seed in (1, 2):
        agent, steps = AGENTS[name](seed=seed)
        agent.learn(steps)
        states.append(_as_numpy(agent.state_arrays()))
    assert any(
        a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(states[0].values(), states[1].values())
    )


@pytest.mark.parametrize("mode", ["vector_entry_point", "sync"])
def test_vector_env_rollouts_repeat_for_a_seed(mode: str) -> None:
    def rollout() -> list:
        venv = gym.make_vec("aligngym/Target-Token-v0", num_envs=4, vectorization_mode=mode)
        venv.action_space.seed(3)
        obs, _ = venv.reset(seed=11)
        trace = [obs["input_ids"].copy()]
        for _ in range(12):
            obs, reward, terminated, _, _ = venv.step(venv.action_space.sample())
            trace += [obs["input_ids"].copy(), reward.copy(), terminated.copy()]
        return trace

    a, b = rollout(), rollout()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
