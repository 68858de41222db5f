"""Stable-Baselines3 on aligngym: the token-embedding extractor, the SAME_STEP VecEnv adapter, PPO / A2C / DQN
learning against a random baseline, MaskablePPO masks, evaluate_policy on every id, callbacks and checkpoints."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import aligngym.envs
from aligngym.agents.base import CheckpointError, RandomAgent, evaluate
from aligngym.agents.sb3 import (
    AlignmentInfoCallback,
    SB3Agent,
    SB3VecEnvAdapter,
    TokenEmbeddingExtractor,
    make_sb3_agent,
    make_sb3_vec_env,
    token_policy_kwargs,
)
from tests.conftest import env_kwargs, restricted_sentiment_kwargs

TARGET = "aligngym/Target-Token-v0"
TARGET_SEQ = "aligngym/Target-Sequence-v0"
SENTIMENT = "aligngym/Sentiment-Token-v0"
#: candidate action words; kept when they are one token in the current default tokenizer
SENTIMENT_WORDS = (
    " great",
    " good",
    " love",
    " wonderful",
    " terrible",
    " bad",
    " awful",
    " the",
    " and",
    " not",
)


def sentiment_kwargs() -> dict[str, Any]:
    """A restricted-vocabulary Sentiment env: single-token words + EOS, 4 new tokens."""
    return restricted_sentiment_kwargs(SENTIMENT_WORDS)


def obs_batch(env: gym.Env, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n observations of ``env`` taken along random episodes, batched (n, L)."""
    rows = []
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(n):
        rows.append(obs)
        obs, _, done, _, _ = env.step(env.action_space.sample())
        if done:
            obs, _ = env.reset()
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


# -- the extractor --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["mean", "gru", "mean_gru"])
def test_extractor_reads_float_ids_as_long_and_ignores_padding(pooling: str) -> None:
    env = gym.make(TARGET)
    ex = TokenEmbeddingExtractor(env.observation_space, 16, pooling, prompt_len=12)
    batch = obs_batch(env, 12)
    as_long = {k: torch.as_tensor(v) for k, v in batch.items()}
    as_float = {k: v.float() for k, v in as_long.items()}  # what SB3's preprocess_obs hands over
    other_pad = dict(as_long)
    other_pad["input_ids"] = torch.where(as_long["attention_mask"] > 0, as_long["input_ids"], 7)
    with torch.no_grad():
        ref = ex(as_long)
        torch.testing.assert_close(ex(as_float), ref)
        torch.testing.assert_close(ex(other_pad), ref)
    assert ref.shape == (12, ex.features_dim)


def test_mean_pooled_features_depend_on_token_order() -> None:
    env = gym.make(TARGET)
    ex = TokenEmbeddingExtractor(env.observation_space, 16, "mean", prompt_len=12)
    a, _ = env.reset(options={"prompt": {"prompt": "Say: red blue.", "target": "red blue"}})
    b, _ = env.reset(options={"prompt": {"prompt": "Say: blue red.", "target": "blue red"}})
    with torch.no_grad():
        fa = ex({k: torch.as_tensor(v)[None] for k, v in a.items()})
        fb = ex({k: torch.as_tensor(v)[None] for k, v in b.items()})
    assert not torch.allclose(fa, fb)


def tiny_causal_lm(vocab_size: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=24, n_layer=1, n_head=2, n_positions=64))


def test_extractor_starts_from_a_causal_lms_input_embeddings(tmp_path: Path) -> None:
    env = gym.make(TARGET)
    vocab = env.unwrapped.runtime.vocab_size
    lm = tiny_causal_lm(vocab)
    from_object = TokenEmbeddingExtractor(env.observation_space, pooling="mean", init_embeddings=lm)
    torch.testing.assert_close(from_object.embed.weight, lm.get_input_embeddings().weight)
    assert from_object.embed_dim == 24
    lm.save_pretrained(tmp_path / "lm")
    from_dir = TokenEmbeddingExtractor(
        env.observation_space, embed_dim=8, init_embeddings=tmp_path / "lm", freeze_embeddings=True
    )
    torch.testing.assert_close(from_dir.embed.weight, lm.get_input_embeddings().weight)
    assert not from_dir.embed.weight.requires_grad and from_dir.embed_dim == 8  # projected 24 -> 8


def test_extractor_refuses_an_lm_with_a_smaller_vocabulary() -> None:
    env = gym.make(TARGET)
    with pytest.raises(ValueError, match="rows but the env's vocabulary"):
        TokenEmbeddingExtractor(env.observation_space, init_embeddings=torch.zeros(10, 4))


def test_token_policy_kwargs_need_dict_token_observations() -> None:
    env = gym.make(TARGET)
    kwargs = token_policy_kwargs(env, embed_dim=32, pooling="gru")
    assert kwargs["features_extractor_class"] is TokenEmbeddingExtractor
    assert kwargs["features_extractor_kwargs"]["prompt_len"] == env.unwrapped.runtime.max_prompt_tokens
    with pytest.raises(TypeError, match="Dict\\(input_ids, attention_mask\\)"):
        token_policy_kwargs(gym.make("CartPole-v1"))


# -- the VecEnv adapter ---------------------------------------------------------------------------------------------
def test_adapter_matches_sb3s_dummy_vec_env_step_for_step() -> None:
    n, seed = 3, 5
    ours = SB3VecEnvAdapter(
        SyncVectorEnv([lambda: gym.make(TARGET)] * n, autoreset_mode=AutoresetMode.SAME_STEP)
    )
    theirs = DummyVecEnv([lambda: Monitor(gym.make(TARGET))] * n)
    ours.seed(seed)
    theirs.seed(seed)
    o1, o2 = ours.reset(), theirs.reset()
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(30):
        np.testing.assert_array_equal(o1["input_ids"], o2["input_ids"])
        actions = rng.integers(0, 5, size=n)
        o1, r1, d1, i1 = ours.step(actions)
        o2, r2, d2, i2 = theirs.step(actions)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        for a, b, done in zip(i1, i2, d1):
            if done:
                ended += 1
                assert a["score"] == b["score"] and a["completion"] == b["completion"]
                for k in ("input_ids", "attention_mask"):
                    np.testing.assert_array_equal(a["terminal_observation"][k], b["terminal_observation"][k])
                assert a["TimeLimit.truncated"] is False
    assert ended > 5


def test_adapter_refuses_a_next_step_vector_env() -> None:
    venv = SyncVectorEnv([lambda: gym.make(TARGET)] * 2)
    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VecEnvAdapter(venv)


def test_adapter_over_the_native_vector_env_gives_final_obs_and_row_masks() -> None:
    venv = make_sb3_vec_env(TARGET, 4, vectorization_mode="vector_entry_point", monitor=False)
    assert type(venv.venv).__name__ == "TokenVectorEnv"
    venv.seed(0)
    obs = venv.reset()
    assert obs["input_ids"].shape == (4, 16)
    masks = venv.env_method("action_masks")
    assert len(masks) == 4 and masks[0].shape == (5,)
    done_seen = False
    for _ in range(4):  # horizon 4: every row ends within 4 steps
        obs, rewards, dones, infos = venv.step(np.zeros(4, dtype=np.int64))
        assert rewards.dtype == np.float32 and isinstance(infos, list) and len(infos) == 4
        for info, done, row in zip(infos, dones, obs["attention_mask"]):
            if done:
                done_seen = True
                assert info["terminal_observation"]["attention_mask"][12:].sum() >= 1
                assert "score" in info and "reward_components" in info
                assert row[12:].sum() == 0  # the returned observation already starts the next episode
    assert done_seen


# -- learning -------------------------------------------------------------------------------------------------------
#: (agent name, env id, env kwargs, steps, SB3 vector envs, constructor kwargs, asserted margin over random)
LEARNING_CASES = [
    ("sb3-ppo", TARGET, None, 2000, 8, {"n_steps": 32}, 0.25),
    ("sb3-a2c", TARGET, None, 6000, 8, {}, 0.2),
    ("sb3-dqn", TARGET, None, 3000, 4, {}, 0.2),
    ("sb3-ppo", SENTIMENT, "restricted", 512, 8, {"n_steps": 32}, 0.4),
    ("sb3-a2c", SENTIMENT, "restricted", 512, 8, {}, 0.4),
    ("sb3-dqn", SENTIMENT, "restricted", 768, 4, {}, 0.4),
    ("sb3-ppo", TARGET_SEQ, None, 512, 8, {"n_steps": 16}, 0.25),
]


@pytest.mark.parametrize(
    ("name", "env_id", "env_kw", "steps", "n_envs", "kwargs", "margin"),
    LEARNING_CASES,
    ids=[f"{c[0]}-{c[1].split('/')[1]}" for c in LEARNING_CASES],
)
def test_sb3_agent_beats_random(
    name: str, env_id: str, env_kw: str | None, steps: int, n_envs: int, kwargs: dict, margin: float
) -> None:
    env_args = sentiment_kwargs() if env_kw == "restricted" else {}
    episodes = None if "Target" in env_id else 24  # Target: every prompt once; Sentiment: 24 seeded prompts
    eval_env = gym.make(env_id, **env_args)
    random_score = evaluate(RandomAgent(eval_env), eval_env, n_episodes=episodes, deterministic=False)
    venv = make_sb3_vec_env(env_id, n_envs, **env_args)
    agent = make_sb3_agent(name, venv, seed=0, device="cpu", **kwargs).learn(steps)
    trained = evaluate(agent, eval_env, n_episodes=episodes, deterministic=True)
    assert trained["mean_score"] >= random_score["mean_score"] + margin, (
        f"{name} on {env_id}: {trained['mean_score']:.3f} vs random {random_score['mean_score']:.3f}"
    )


# -- MaskablePPO ----------------------------------------------------------------------------------------------------
class MaskChecker(gym.Wrapper):
    """Counts steps whose action the env's ``action_masks()`` forbade at that moment."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps = 0
        self.violations = 0

    def step(self, action: Any) -> Any:
        mask = self.env.unwrapped.action_masks()
        a = np.asarray(action).reshape(-1)
        if isinstance(self.action_space, gym.spaces.Discrete):
            bad = not mask[int(a[0])]
        else:
            k = int(self.action_space.nvec[0])
            bad = not all(mask[t * k + int(x)] for t, x in enumerate(a))
        self.steps += 1
        self.violations += int(bad)
        return self.env.step(action)


@pytest.mark.parametrize("env_id", [SENTIMENT, "aligngym/Sentiment-Sequence-v0"])
def test_maskable_ppo_never_takes_a_masked_action(env_id: str) -> None:
    kw = sentiment_kwargs()
    kw["action_vocab"] = [*kw["action_vocab"], "<|pad|>"]  # a special token: always masked
    kw["min_new_tokens"] = 2  # EOS masked for the first two tokens
    venv = DummyVecEnv([lambda: MaskChecker(gym.make(env_id, **kw))] * 4)
    agent = make_sb3_agent("sb3-maskable-ppo", venv, seed=0, device="cpu", n_steps=32, ent_coef=0.1)
    agent.learn(256)
    checked = venv.envs[0]
    obs, _ = checked.reset(seed=1)
    for _ in range(200):  # predict with masks derived from the observation, stochastic on purpose
        action, _ = agent.predict(obs, deterministic=False)
        obs, _, done, _, _ = checked.step(action)
        if done:
            obs, _ = checked.reset()
    assert sum(e.steps for e in venv.envs) == 256 + 200
    assert sum(e.violations for e in venv.envs) == 0
    # the same policy without masks does pick forbidden actions: the check is not vacuous
    unmasked = DummyVecEnv([lambda: MaskChecker(gym.make(env_id, **kw))] * 4)
    make_sb3_agent("sb3-ppo", unmasked, seed=0, device="cpu", n_steps=32).learn(128)
    assert sum(e.violations for e in unmasked.envs) > 0


def test_maskable_ppo_reads_row_masks_from_the_native_vector_env() -> None:
    kw = {**sentiment_kwargs(), "min_new_tokens": 2}
    venv = make_sb3_vec_env(SENTIMENT, 4, **kw)
    agent = make_sb3_agent("sb3-maskable-ppo", venv, seed=0, device="cpu", n_steps=32).learn(256)
    eos = len(kw["action_vocab"]) - 1
    masks = agent.model.rollout_buffer.action_masks.reshape(-1, len(kw["action_vocab"]))
    assert masks[:, :eos].all()
    buffer = agent.model.rollout_buffer  # flattened by the last update: (n_steps * n_envs, ...)
    first_two = buffer.observations["attention_mask"].reshape(len(masks), -1)[:, -4:].sum(-1) < 2
    assert not masks[first_two, eos].any() and masks[~first_two, eos].all()
    assert not np.any(buffer.actions.reshape(-1)[first_two] == eos)


# -- evaluate_policy on every id ------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", sorted(aligngym.envs.list_envs()))
def test_evaluate_policy_runs_on_every_registered_id(env_id: str) -> None:
    env = Monitor(gym.make(env_id, **env_kwargs(env_id, max_new_tokens=4)))
    model = PPO(
        "MultiInputPolicy",
        env,
        policy_kwargs=token_policy_kwargs(env, embed_dim=16),
        n_steps=16,
        batch_size=16,
        seed=0,
    )
    mean, std = evaluate_policy(model, env, n_eval_episodes=2)
    assert np.isfinite(mean) and np.isfinite(std)


# -- callbacks and logging ------------------------------------------------------------------------------------------
def test_alignment_info_callback_logs_score_and_components(tmp_path: Path) -> None:
    env = gym.make(SENTIMENT, **sentiment_kwargs())
    model = PPO(
        "MultiInputPolicy", env, policy_kwargs=token_policy_kwargs(env, embed_dim=16), n_steps=64, seed=0
    )
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(128, callback=AlignmentInfoCallback())
    with open(tmp_path / "progress.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {"charts/score", "reward/sentiment"} <= set(rows[0])
    assert all(-1.0 <= float(r["charts/score"]) <= 1.0 for r in rows if r["charts/score"])


def test_agent_logs_charts_and_losses_and_its_callback_can_stop_learning() -> None:
    env = gym.make(SENTIMENT, **sentiment_kwargs())
    calls: list[dict[str, float]] = []

    def stop_after_two(agent: Any, metrics: dict[str, float]) -> bool:
        calls.append(metrics)
        return len(calls) < 2

    agent = make_sb3_agent("sb3-ppo", env, seed=0, device="cpu", n_steps=64, log_every=64)
    agent.learn(2048, callback=stop_after_two)
    assert len(calls) == 2 and agent.num_timesteps < 2048
    keys = set().union(*agent.logger.history)
    assert {"charts/episodic_return", "charts/score", "losses/value_loss", "losses/approx_kl"} <= keys
    assert {"losses/clipfrac", "losses/policy_loss", "losses/entropy"} <= keys  # CleanRL's names, as ours


# -- checkpoints ----------------------------------------------------------------------------------------------------
def test_sb3_zip_round_trip_with_the_token_extractor(tmp_path: Path) -> None:
    env = gym.make(TARGET)
    model = PPO(
        "MultiInputPolicy", env, policy_kwargs=token_policy_kwargs(env, pooling="gru"), n_steps=64, seed=0
    )
    model.learn(64)
    model.save(tmp_path / "ppo.zip")
    loaded = PPO.load(tmp_path / "ppo.zip", env=env, device="cpu")
    batch = obs_batch(env, 20)
    np.testing.assert_array_equal(
        model.predict(batch, deterministic=True)[0], loaded.predict(batch, deterministic=True)[0]
    )


@pytest.mark.parametrize(
    ("name", "kwargs"), [("sb3-ppo", {"n_steps": 32}), ("sb3-dqn", {"learning_starts": 32})]
)
def test_agent_checkpoint_is_pickle_free_and_round_trips(name: str, kwargs: dict, tmp_path: Path) -> None:
    env = gym.make(TARGET)
    agent = make_sb3_agent(name, env, seed=0, device="cpu", pooling="mean_gru", **kwargs).learn(64)
    agent.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["agent.json", "weights.safetensors"]
    loaded = SB3Agent.load(tmp_path / "ckpt", gym.make(TARGET))
    batch = obs_batch(env, 20)
    np.testing.assert_array_equal(
        agent.predict(batch, deterministic=True)[0], loaded.predict(batch, deterministic=True)[0]
    )
    assert loaded.num_timesteps == agent.num_timesteps and loaded.config.algo == name[4:]
    with pytest.raises(CheckpointError, match="another env"):
        SB3Agent.load(tmp_path / "ckpt", gym.make(SENTIMENT, **sentiment_kwargs()))


def test_checkpoint_with_lm_initialised_embeddings_loads_without_the_lm(tmp_path: Path) -> None:
    env = gym.make(TARGET)
    lm = tiny_causal_lm(env.unwrapped.runtime.vocab_size)
    agent = make_sb3_agent("sb3-ppo", env, seed=0, device="cpu", init_embeddings=lm, embed_dim=16, n_steps=32)
    agent.learn(32).save(tmp_path / "ckpt")
    loaded = SB3Agent.load(tmp_path / "ckpt", env)
    torch.testing.assert_close(
        loaded.model.policy.features_extractor.embed.weight,
        agent.model.policy.features_extractor.embed.weight,
    )


# -- errors and devices ---------------------------------------------------------------------------------------------
def test_make_sb3_agent_names_and_dqn_action_space_errors() -> None:
    with pytest.raises(ValueError, match="unknown SB3 agent"):
        make_sb3_agent("sb3-sac", gym.make(TARGET))
    with pytest.raises(ValueError, match="DQN needs a Discrete action space"):
        make_sb3_agent("sb3-dqn", gym.make(TARGET_SEQ))


@pytest.mark.gpu
def test_sb3_agent_trains_on_cuda() -> None:
    env = gym.make(SENTIMENT, **sentiment_kwargs())
    agent = make_sb3_agent("sb3-ppo", env, seed=0, device="cuda", n_steps=64).learn(128)
    assert next(agent.model.policy.parameters()).device.type == "cuda"
    action, _ = agent.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(int(action))
