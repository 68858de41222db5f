"""Tabular Q-learning: solves Target in both exploration modes, the update rule, table bounds, checkpoints, resume."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents.base import CheckpointError, RandomAgent, evaluate
from aligngym.agents.tabular import QLearningAgent, QLearningConfig

TARGET = "aligngym/Target-Token-v0"


@pytest.fixture(scope="module")
def target_env() -> gym.Env:
    return gym.make(TARGET)


@pytest.fixture(scope="module")
def target_test_env() -> gym.Env:
    return gym.make(TARGET, split="test")


@pytest.fixture(scope="module")
def trained() -> QLearningAgent:
    """A short run shared by the checkpoint tests (not solved; it only needs a populated table)."""
    return QLearningAgent(gym.make(TARGET), QLearningConfig(seed=3, learning_rate=1.0)).learn(3000)


def test_epsilon_greedy_solves_target(target_env: gym.Env, target_test_env: gym.Env) -> None:
    cfg = QLearningConfig(seed=0, exploration="epsilon_greedy", learning_rate=1.0, exploration_fraction=0.8)
    agent = QLearningAgent(target_env, cfg).learn(40_000)
    result = evaluate(agent, target_test_env, n_episodes=None, deterministic=True)  # every prompt once
    assert len(result["returns"]) == len(target_test_env.unwrapped.runtime.rows)
    assert result["returns"] == [1.0] * len(result["returns"]), result["completions"]


def test_softmax_with_optimistic_start_solves_target(target_env: gym.Env, target_test_env: gym.Env) -> None:
    # Boltzmann exploration over zero-initialised values never retries an untried action once a sibling has
    # earned partial credit; optimistic initial values (>= the best return) make it try each one.
    cfg = QLearningConfig(
        seed=0, exploration="softmax", learning_rate=1.0, initial_q=1.0, exploration_fraction=0.8
    )
    agent = QLearningAgent(target_env, cfg).learn(30_000)
    result = evaluate(agent, target_test_env, n_episodes=None, deterministic=True)
    assert result["returns"] == [1.0] * len(result["returns"]), result["completions"]


def test_trained_agent_beats_random(trained: QLearningAgent, target_test_env: gym.Env) -> None:
    ours = evaluate(trained, target_test_env, deterministic=True)["mean_return"]
    rand = evaluate(RandomAgent(target_test_env), target_test_env, n_episodes=64, deterministic=False)[
        "mean_return"
    ]
    assert ours > rand + 0.3


def test_update_bootstraps_only_before_termination(target_env: gym.Env) -> None:
    # lr=1 on a deterministic env: Q(s, a) = r + gamma * max Q(s') exactly, and r alone at the end
    cfg = QLearningConfig(seed=0, learning_rate=1.0, gamma=0.5, epsilon_end=1.0)
    agent = QLearningAgent(target_env, cfg).learn(3000)
    rt = target_env.unwrapped.runtime
    red, eos = 0, int(np.flatnonzero(rt.action_ids == rt.eos_id)[0])
    assert rt.rows[0]["target"] == "red"
    env = gym.make(TARGET)
    root, _ = env.reset(options={"prompt_index": 0})
    after_red, *_ = env.step(red)
    assert agent.q_values(after_red)[eos] == 1.0  # terminal: the score, not 1.0 + gamma * anything
    assert agent.q_values(root)[red] == 0.5 * agent.q_values(after_red).max()


def test_learning_logs_table_size_and_exploration(target_env: gym.Env) -> None:
    agent = QLearningAgent(target_env, QLearningConfig(seed=0, log_interval=5)).learn(500)
    history = agent.logger.history
    assert history and all("charts/table_size" in row and "charts/epsilon" in row for row in history)
    assert history[-1]["charts/table_size"] == agent.table.size > 1
    assert history[-1]["charts/epsilon"] < history[0]["charts/epsilon"]
    assert "charts/episodic_return" in history[-1] and "losses/td_error" in history[-1]


def test_full_table_raises_by_default(target_env: gym.Env) -> None:
    agent = QLearningAgent(target_env, QLearningConfig(seed=0, max_states=20))
    with pytest.raises(RuntimeError, match="max_states=20"):
        agent.learn(2000)


def test_full_table_freezes_when_asked(target_env: gym.Env) -> None:
    agent = QLearningAgent(target_env, QLearningConfig(seed=0, max_states=20, on_full="freeze")).learn(2000)
    assert agent.table.size == 20
    assert agent.dropped_updates > 0
    assert agent.logger.latest("charts/table_size") == 20


def test_save_load_gives_identical_predictions(trained: QLearningAgent, tmp_path: Path) -> None:
    trained.save(tmp_path / "q")
    env = gym.make(TARGET)
    loaded = QLearningAgent.load(tmp_path / "q", env)
    np.testing.assert_array_equal(
        loaded.table.keys[: loaded.table.size], trained.table.keys[: trained.table.size]
    )
    np.testing.assert_array_equal(
        loaded.table.values[: loaded.table.size], trained.table.values[: trained.table.size]
    )
    obs = {"input_ids": trained.table.keys[: trained.table.size].copy()}
    obs["attention_mask"] = (obs["input_ids"] >= 0).astype(np.int64)
    obs["input_ids"] = np.where(obs["input_ids"] >= 0, obs["input_ids"], 0)
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], trained.predict(obs, deterministic=True)[0]
    )


def test_truncated_checkpoint_raises(trained: QLearningAgent, tmp_path: Path) -> None:
    path = trained.save(tmp_path / "q")
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        QLearningAgent.load(path, gym.make(TARGET))


def test_checkpoint_for_another_env_raises(trained: QLearningAgent, tmp_path: Path) -> None:
    path = trained.save(tmp_path / "q")
    other = gym.make(
        "aligngym/Sentiment-Token-v0", action_vocab=[" good", " bad", "<|endoftext|>"], max_new_tokens=2
    )
    with pytest.raises(CheckpointError, match="another env"):
        QLearningAgent.load(path, other)


def test_resumed_training_matches_uninterrupted_run(target_env: gym.Env, tmp_path: Path) -> None:
    total = 4000
    uninterrupted = QLearningAgent(gym.make(TARGET), QLearningConfig(seed=7)).learn(total)

    ckpt = tmp_path / "ckpt"
    cfg = QLearningConfig(seed=7, checkpoint_every=500, checkpoint_dir=str(ckpt))
    crash_at = 2300
    QLearningAgent(gym.make(TARGET), cfg).learn(
        total, callback=lambda agent, _: agent.num_timesteps < crash_at
    )
    resumed = QLearningAgent.load(ckpt, gym.make(TARGET))
    assert 0 < resumed.num_timesteps <= crash_at
    resumed.learn(total - resumed.num_timesteps)

    assert resumed.num_timesteps == uninterrupted.num_timesteps == total
    for key in ("keys", "values", "valid", "support"):
        np.testing.assert_array_equal(resumed.state_arrays()[key], uninterrupted.state_arrays()[key])
    assert resumed.rng.bit_generator.state == uninterrupted.rng.bit_generator.state


def test_predict_respects_given_action_mask(trained: QLearningAgent) -> None:
    obs, _ = gym.make(TARGET).reset(seed=0)
    mask = np.zeros(5, dtype=bool)
    mask[2] = True
    assert trained.predict(obs, deterministic=True, action_masks=mask)[0] == 2
    assert trained.predict(obs, deterministic=False, action_masks=mask)[0] == 2


def test_rejects_vector_env_and_bad_config() -> None:
    venv = gym.make_vec(TARGET, num_envs=2, vectorization_mode="sync")
    with pytest.raises(TypeError, match="VectorEnv"):
        QLearningAgent(venv, QLearningConfig())
    with pytest.raises(ValueError, match="exploration"):
        QLearningConfig(exploration="ucb")
