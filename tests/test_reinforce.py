"""REINFORCE and the GRU policy: padding-exact encoding, learning on Target and Sentiment, autoreset handling,
action masks, checkpoints (round trip, corruption, mismatch, custom policies) and exact resume on CPU."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from torch import nn

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents.base import CheckpointError, RandomAgent, evaluate
from aligngym.agents.policies import GRUPolicy
from aligngym.agents.reinforce import ReinforceAgent, ReinforceConfig
from tests.conftest import restricted_sentiment_kwargs

TARGET = "aligngym/Target-Token-v0"
SENTIMENT = "aligngym/Sentiment-Token-v0"
#: candidate action words; the test keeps those that are one token in the current default tokenizer
SENTIMENT_WORDS = (
    " great",
    " good",
    " excellent",
    " love",
    " bad",
    " awful",
    " terrible",
    " the",
    " and",
    " very",
)


def sentiment_kwargs() -> dict:
    return restricted_sentiment_kwargs(SENTIMENT_WORDS)


@pytest.fixture(scope="module")
def trained() -> ReinforceAgent:
    """A short CPU run shared by the checkpoint tests."""
    return ReinforceAgent(gym.make(TARGET), ReinforceConfig(seed=0, device="cpu", num_envs=4)).learn(300)


def small_obs(n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    env = gym.make(TARGET)
    rows = [env.reset(seed=seed + i)[0] for i in range(n)]
    return {k: np.stack([r[k] for r in rows]) for k in ("input_ids", "attention_mask")}


# -- GRU policy ----------------------------------------------------------------------------------------------------
def test_gru_reads_only_visible_tokens_whatever_the_padding() -> None:
    torch.manual_seed(0)
    policy = GRUPolicy(vocab_size=50, n_actions=5)
    ids = torch.tensor([[0, 0, 7, 8, 9, 3, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0]])
    shifted = torch.tensor([[7, 8, 9, 3, 0, 0, 0, 0]])
    shifted_mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]])
    garbage = torch.where(mask.bool(), ids, torch.tensor(42))  # other ids under the padding
    reference = policy(ids, mask)
    torch.testing.assert_close(policy(shifted, shifted_mask), reference)
    torch.testing.assert_close(policy(garbage, mask), reference)
    # a row's output does not depend on the rest of the batch
    other = torch.tensor([[5, 6, 1, 2, 3, 4, 5, 6]])
    batch = policy(torch.cat([other, ids]), torch.cat([torch.ones_like(other), mask]))
    torch.testing.assert_close(batch[1:], reference)


def test_gru_shapes_value_head_and_errors() -> None:
    policy = GRUPolicy(vocab_size=50, n_actions=5, hidden_size=16)
    ids, mask = torch.randint(0, 50, (3, 6)), torch.ones(3, 6, dtype=torch.long)
    logits, values = policy.forward_with_value(ids, mask)
    assert logits.shape == (3, 5) and values.shape == (3,)
    torch.testing.assert_close(policy.value(ids, mask), values)
    with pytest.raises(ValueError, match="visible token"):
        policy(ids, torch.zeros_like(mask))
    with pytest.raises(TypeError, match="LongTensor"):
        policy(ids.float(), mask)
    with pytest.raises(RuntimeError, match="value head"):
        GRUPolicy(50, 5, value_head=False).value(ids, mask)


# -- learning ------------------------------------------------------------------------------------------------------
def test_reinforce_beats_random_on_target() -> None:
    env, test_env = gym.make(TARGET), gym.make(TARGET, split="test")
    cfg = ReinforceConfig(seed=0, device="cpu", num_envs=16, learning_rate=1e-2, baseline="value")
    agent = ReinforceAgent(env, cfg).learn(6000)
    ours = evaluate(agent, test_env, deterministic=True)["mean_return"]
    rand = evaluate(RandomAgent(test_env), test_env, n_episodes=200, deterministic=False)["mean_return"]
    assert ours > rand + 0.25, (ours, rand)


def test_reinforce_raises_mean_sentiment_score() -> None:
    kwargs = sentiment_kwargs()
    env, test_env = gym.make(SENTIMENT, **kwargs), gym.make(SENTIMENT, split="test", **kwargs)
    agent = ReinforceAgent(env, ReinforceConfig(seed=0, device="cpu", num_envs=8))
    before = evaluate(agent, test_env, deterministic=False)["mean_score"]
    agent.learn(1000)
    after = evaluate(agent, test_env, deterministic=False)["mean_score"]
    rand = evaluate(RandomAgent(test_env), test_env, deterministic=False)["mean_score"]
    assert after > before + 0.5 and after > rand + 0.5, (before, after, rand)
    assert agent.logger.latest("charts/score") > agent.logger.history[0]["charts/score"]


# -- rollouts ------------------------------------------------------------------------------------------------------
def assert_transitions_are_consistent(batch: dict, env: gym.Env) -> None:
    """Every recorded step is a real decision: episodes start empty and grow by the chosen token each step."""
    rt = env.unwrapped.runtime
    start = rt.max_prompt_tokens
    counts = batch["mask"][:, start:].sum(axis=1)
    assert counts[0] == 0
    for i in range(1, len(counts)):
        if counts[i] > 0:
            assert counts[i - 1] == counts[i] - 1
            assert batch["ids"][i, start + counts[i] - 1] == rt.token_of(int(batch["actions"][i - 1]))


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
def test_vector_env_autoreset_modes_record_only_real_steps(mode: AutoresetMode) -> None:
    venv = SyncVectorEnv([lambda: gym.make(TARGET) for _ in range(3)], autoreset_mode=mode)
    agent = ReinforceAgent(venv, ReinforceConfig(seed=0, device="cpu", episodes_per_env=3))
    batch = agent.collect(venv)
    assert len(batch["episode_returns"]) == 9
    assert len(batch["returns"]) == sum(batch["episode_lengths"])
    assert_transitions_are_consistent(batch, gym.make(TARGET))
    agent.learn(100)
    assert agent.num_timesteps >= 100 and agent.num_episodes >= 9


def test_single_env_is_wrapped_into_num_envs_copies() -> None:
    agent = ReinforceAgent(
        gym.make(TARGET), ReinforceConfig(seed=0, device="cpu", num_envs=3, episodes_per_env=1)
    )
    agent.learn(1)
    assert agent._vector_env().num_envs == 3
    assert agent.num_episodes == 3


def test_action_masks_are_respected() -> None:
    env = gym.make(TARGET, min_new_tokens=2)  # EOS is invalid for the first two tokens
    agent = ReinforceAgent(env, ReinforceConfig(seed=0, device="cpu", num_envs=4, episodes_per_env=4))
    batch = agent.collect(agent._vector_env())
    rt = env.unwrapped.runtime
    eos = int(np.flatnonzero(rt.action_ids == rt.eos_id)[0])
    counts = batch["mask"][:, rt.max_prompt_tokens :].sum(axis=1)
    assert not batch["valid"][counts < 2, eos].any()
    assert batch["valid"][np.arange(len(counts)), batch["actions"]].all()
    assert min(batch["episode_lengths"]) >= 2


def test_predict_respects_given_action_mask(trained: ReinforceAgent) -> None:
    obs = small_obs(4)
    mask = np.zeros(5, dtype=bool)
    mask[3] = True
    assert (trained.predict(obs, deterministic=False, action_masks=mask)[0] == 3).all()


# -- checkpoints ---------------------------------------------------------------------------------------------------
def test_save_load_gives_identical_predictions(trained: ReinforceAgent, tmp_path: Path) -> None:
    trained.save(tmp_path / "r")
    loaded = ReinforceAgent.load(tmp_path / "r", gym.make(TARGET))
    obs = small_obs(8)
    np.testing.assert_array_equal(
        loaded._logits(obs["input_ids"], obs["attention_mask"]),
        trained._logits(obs["input_ids"], obs["attention_mask"]),
    )
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], trained.predict(obs, deterministic=True)[0]
    )
    assert loaded.baseline_value == trained.baseline_value and loaded.num_updates == trained.num_updates


def test_truncated_checkpoint_raises(trained: ReinforceAgent, tmp_path: Path) -> None:
    path = trained.save(tmp_path / "r")
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        ReinforceAgent.load(path, gym.make(TARGET))


def test_checkpoint_for_another_env_raises(trained: ReinforceAgent, tmp_path: Path) -> None:
    path = trained.save(tmp_path / "r")
    with pytest.raises(CheckpointError, match="another env"):
        ReinforceAgent.load(path, gym.make(SENTIMENT, **sentiment_kwargs()))


def test_resumed_training_matches_uninterrupted_run_on_cpu(tmp_path: Path) -> None:
    def config(**kw: object) -> ReinforceConfig:
        return ReinforceConfig(seed=5, device="cpu", num_envs=4, baseline="value", **kw)  # type: ignore[arg-type]

    total = 600
    uninterrupted = ReinforceAgent(gym.make(TARGET), config()).learn(total)
    ckpt = tmp_path / "ckpt"
    crashed = ReinforceAgent(gym.make(TARGET), config(checkpoint_every=100, checkpoint_dir=str(ckpt)))
    crashed.learn(total, callback=lambda agent, _: agent.num_timesteps < 350)
    resumed = ReinforceAgent.load(ckpt, gym.make(TARGET))
    assert 0 < resumed.num_timesteps <= crashed.num_timesteps < total
    resumed.learn(total - resumed.num_timesteps)
    assert resumed.num_timesteps == uninterrupted.num_timesteps
    a, b = resumed.state_arrays(), uninterrupted.state_arrays()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.rng.bit_generator.state == uninterrupted.rng.bit_generator.state


class MeanEmbeddingPolicy(nn.Module):
    """A policy of another kind: masked mean of token embeddings -> logits (exercises the plug-in seam)."""

    def __init__(self, vocab_size: int, n_actions: int) -> None:
        super().__init__()
        self.vocab_size, self.n_actions = vocab_size, n_actions
        self.embed = nn.Embedding(vocab_size, 16)
        self.head = nn.Linear(16, n_actions)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).float()
        return self.head((self.embed(input_ids) * m).sum(1) / m.sum(1).clamp(min=1))


def test_custom_policy_module_plugs_in_and_round_trips(tmp_path: Path) -> None:
    env = gym.make(TARGET)
    rt = env.unwrapped.runtime
    policy = MeanEmbeddingPolicy(rt.vocab_size, rt.n_actions)
    agent = ReinforceAgent(env, ReinforceConfig(seed=0, device="cpu", num_envs=2, policy=policy)).learn(50)
    path = agent.save(tmp_path / "custom")
    with pytest.raises(CheckpointError, match="policy=module"):
        ReinforceAgent.load(path, gym.make(TARGET))
    loaded = ReinforceAgent.load(
        path, gym.make(TARGET), policy=MeanEmbeddingPolicy(rt.vocab_size, rt.n_actions)
    )
    obs = small_obs(5)
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0]
    )
    with pytest.raises(ValueError, match="value"):
        ReinforceAgent(
            env,
            ReinforceConfig(
                device="cpu", baseline="value", policy=MeanEmbeddingPolicy(rt.vocab_size, rt.n_actions)
            ),
        )


def test_policy_for_another_vocabulary_is_refused() -> None:
    env = gym.make(TARGET)
    wrong = GRUPolicy(vocab_size=env.unwrapped.runtime.vocab_size + 1, n_actions=5)
    with pytest.raises(ValueError, match="vocab_size"):
        ReinforceAgent(env, ReinforceConfig(device="cpu", policy=wrong))
    with pytest.raises(TypeError, match="Discrete"):
        ReinforceAgent(gym.make("aligngym/Target-Sequence-v0"), ReinforceConfig(device="cpu"))


@pytest.mark.gpu
def test_cuda_learns_and_round_trips(tmp_path: Path) -> None:
    env = gym.make(TARGET)
    agent = ReinforceAgent(env, ReinforceConfig(seed=0, device="cuda", num_envs=4, baseline="value")).learn(
        300
    )
    assert next(agent.policy.parameters()).is_cuda
    obs = small_obs(6)
    path = agent.save(tmp_path / "gpu")
    on_cpu = ReinforceAgent.load(path, gym.make(TARGET), device="cpu")
    np.testing.assert_allclose(
        on_cpu._logits(obs["input_ids"], obs["attention_mask"]),
        agent._logits(obs["input_ids"], obs["attention_mask"]),
        rtol=1e-4,
        atol=1e-5,
    )
    on_gpu = ReinforceAgent.load(path, gym.make(TARGET), device="cuda")
    on_gpu.learn(100)  # the Adam state moved to the GPU with the policy
    assert on_gpu.num_timesteps >= 400
