"""Observation wrappers for generic RL code: flat token Box and frozen-encoder embedding vectors (single and batched),
their registered variants, Gymnasium's and SB3's checkers on every id, and MlpPolicy learning on both."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import aligngym.envs
from aligngym.agents.base import RandomAgent, evaluate
from aligngym.agents.sb3 import make_sb3_agent
from aligngym.envs.wrappers import (
    EmbeddingObservation,
    FlatTokenObservation,
    ObservationEmbedder,
    VectorEmbeddingObservation,
    VectorFlatTokenObservation,
    flatten_token_obs,
)
from tests.conftest import env_kwargs, restricted_sentiment_kwargs

TARGET = "aligngym/Target-Token-v0"
SENTIMENT = "aligngym/Sentiment-Token-v0"
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
    """A restricted-vocabulary Sentiment env: single-token words of the default tokenizer + EOS, 4 new tokens."""
    return restricted_sentiment_kwargs(SENTIMENT_WORDS)


@pytest.fixture(scope="module")
def embedders() -> dict[str, ObservationEmbedder]:
    """One embedder per env id (they share the one frozen MiniLM through the encoder cache)."""
    return {}


def wrap(kind: str, env: gym.Env, embedders: dict[str, ObservationEmbedder]) -> gym.Env:
    if kind == "flat-int64":
        return FlatTokenObservation(env)
    if kind == "flat-float32":
        return FlatTokenObservation(env, dtype=np.float32, layout="ids", scale=True)
    key = env.spec.id if env.spec is not None else "?"
    if key not in embedders:
        embedders[key] = ObservationEmbedder(env.unwrapped.runtime, device="cpu")
    return EmbeddingObservation(env, embedder=embedders[key])


# -- checkers and spaces on every id --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flat-int64", "embedding"])
@pytest.mark.parametrize("env_id", sorted(aligngym.envs.list_envs()))
def test_wrapper_passes_both_checkers_and_stays_in_its_space(
    env_id: str, kind: str, embedders: dict[str, ObservationEmbedder]
) -> None:
    base = gym.make(env_id, **env_kwargs(env_id, max_new_tokens=4))
    env = wrap(kind, base, embedders)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version.*")
        check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(12):
        assert env.observation_space.contains(obs), f"{kind} observation left {env.observation_space}"
        obs, _, done, _, _ = env.step(env.action_space.sample())
        if done:
            obs, _ = env.reset()


# -- flat observation -----------------------------------------------------------------------------------------------
def test_flat_layouts_carry_ids_and_mask() -> None:
    env = gym.make(TARGET)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(0)
    flat = FlatTokenObservation(gym.make(TARGET))
    got, _ = flat.reset(seed=0)
    got, *_ = flat.step(0)
    np.testing.assert_array_equal(got, np.concatenate([obs["input_ids"], obs["attention_mask"]]))
    assert got.dtype == np.int64
    ids_only = flatten_token_obs(obs, 2048, layout="ids", pad_value=-1)
    np.testing.assert_array_equal(ids_only, np.where(obs["attention_mask"] > 0, obs["input_ids"], -1))
    scaled = flatten_token_obs(obs, 2048, dtype=np.float32, scale=True)
    assert scaled.dtype == np.float32 and scaled.max() <= 1.0


@pytest.mark.parametrize("env_id", [TARGET, "aligngym/Sentiment-Sequence-v0"])
def test_scaled_float32_flat_observation_passes_both_checkers(env_id: str) -> None:
    env = FlatTokenObservation(gym.make(env_id), dtype=np.float32, layout="ids", scale=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version.*")
        check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    assert env.observation_space.low.min() == -1.0 and env.observation_space.high.max() == 1.0


def test_flat_rejects_other_dtypes_and_scaled_ints() -> None:
    with pytest.raises(ValueError, match="int64 or float32"):
        FlatTokenObservation(gym.make(TARGET), dtype=np.int32)
    with pytest.raises(ValueError, match="scale=True needs dtype=float32"):
        FlatTokenObservation(gym.make(TARGET), scale=True)


def test_vector_flat_wrapper_matches_the_single_wrapper_and_converts_final_obs() -> None:
    n = 3
    venv = VectorFlatTokenObservation(
        gym.make_vec(
            TARGET, n, vectorization_mode="vector_entry_point", autoreset_mode=AutoresetMode.SAME_STEP
        )
    )
    singles = [FlatTokenObservation(gym.make(TARGET)) for _ in range(n)]
    obs, _ = venv.reset(seed=[1, 2, 3])
    np.testing.assert_array_equal(obs, np.stack([s.reset(seed=k + 1)[0] for k, s in enumerate(singles)]))
    ended = False
    for _ in range(4):
        obs, _, _, _, infos = venv.step(np.zeros(n, dtype=np.int64))
        for i in np.flatnonzero(infos.get("_final_obs", np.zeros(n, bool))):
            ended = True
            assert venv.single_observation_space.contains(infos["final_obs"][i])
        assert venv.observation_space.contains(obs)
    assert ended


def test_registered_flat_and_embedding_variants() -> None:
    flat = gym.make("aligngym/Target-Token-Flat-v0", flat_dtype="float32", flat_layout="ids")
    assert flat.observation_space.dtype == np.float32 and flat.observation_space.shape == (16,)
    emb = gym.make("aligngym/Target-Sequence-Embedding-v0", encoder_device="cpu", embedding_layout="joint")
    assert emb.observation_space.shape == (384 + 1,)
    venv = gym.make_vec("aligngym/Target-Token-Flat-v0", 2, vectorization_mode="sync")
    assert venv.single_observation_space.shape == (32,)


# -- embedding observation ------------------------------------------------------------------------------------------
def states(env_id: str, n: int, **kw: Any) -> dict[str, np.ndarray]:
    """n observations along random episodes, batched (n, L)."""
    env = gym.make(env_id, **kw)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    rows = []
    for _ in range(n):
        rows.append(obs)
        obs, _, done, _, _ = env.step(env.action_space.sample())
        if done:
            obs, _ = env.reset()
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


@pytest.mark.parametrize("layout", ["split", "joint"])
def test_embedding_is_identical_one_by_one_and_batched(layout: str) -> None:
    batch = states(SENTIMENT, 24, **sentiment_kwargs())
    rt = gym.make(SENTIMENT, **sentiment_kwargs()).unwrapped.runtime
    batched = ObservationEmbedder(rt, device="cpu", layout=layout, cache_size=0)(batch)
    single = ObservationEmbedder(rt, device="cpu", layout=layout, cache_size=0)
    one_by_one = np.stack([single({k: v[i] for k, v in batch.items()}) for i in range(24)])
    assert batched.dtype == np.float32 and batched.shape == (24, single.output_dim)
    np.testing.assert_array_equal(batched, one_by_one)


def test_embedding_state_is_markov_and_caches_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    env = EmbeddingObservation(gym.make(SENTIMENT, **sentiment_kwargs()), device="cpu")
    encoded: list[str] = []
    original = env.embedder._encode_texts
    monkeypatch.setattr(env.embedder, "_encode_texts", lambda texts: encoded.extend(texts) or original(texts))
    obs, info = env.reset(seed=3)
    h = env.embedder.dim
    assert obs[-1] == 1.0 and not obs[h : 2 * h].any()  # all 4 tokens left, empty completion embeds as zeros
    prompt_part = obs[:h].copy()
    lefts = []
    for _ in range(3):
        obs, *_ = env.step(0)
        lefts.append(float(obs[-1]))
        np.testing.assert_array_equal(obs[:h], prompt_part)
    assert lefts == [0.75, 0.5, 0.25]
    assert encoded.count(info["prompt"]) == 1  # the prompt went through the encoder once


def test_embedding_from_a_causal_lms_input_embeddings() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    env = gym.make(TARGET)
    rt = env.unwrapped.runtime
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=rt.vocab_size, n_embd=16, n_layer=1, n_head=2))
    wrapped = EmbeddingObservation(env, input_embeddings=lm, normalize=False)
    obs, info = wrapped.reset(seed=0)
    prompt_ids = rt.prompt_ids[info["prompt_index"]]
    table = lm.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_allclose(obs[:16], table[prompt_ids].mean(0), rtol=1e-6)
    assert wrapped.observation_space.shape == (33,)
    with pytest.raises(ValueError, match="rows but the env's vocabulary"):
        EmbeddingObservation(gym.make(TARGET), input_embeddings=np.zeros((5, 4), np.float32))


def test_vector_embedding_rows_equal_the_single_wrapper() -> None:
    kw = sentiment_kwargs()
    venv = VectorEmbeddingObservation(
        gym.make_vec(
            SENTIMENT,
            3,
            vectorization_mode="vector_entry_point",
            autoreset_mode=AutoresetMode.SAME_STEP,
            **kw,
        ),
        device="cpu",
    )
    single = EmbeddingObservation(gym.make(SENTIMENT, **kw), embedder=venv.embedder)
    obs, _ = venv.reset(seed=[5, 6, 7])
    np.testing.assert_array_equal(obs[1], single.reset(seed=6)[0])
    for _ in range(4):
        obs, _, _, _, infos = venv.step(np.ones(3, dtype=np.int64))
        expected = single.step(1)[0]
        if "final_obs" in infos and infos["_final_obs"][1]:
            np.testing.assert_array_equal(infos["final_obs"][1], expected)
            single.reset(seed=None)
        else:
            np.testing.assert_array_equal(obs[1], expected)
    assert venv.observation_space.contains(obs)


# -- learning with MlpPolicy ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedding_run() -> dict[str, Any]:
    """PPO MlpPolicy trained on the batched embedding observation of restricted-vocabulary Sentiment (native vector
    env, SAME_STEP, through SB3VecEnvAdapter), with the encoder's weights before and after."""
    kw = sentiment_kwargs()
    venv = VectorEmbeddingObservation(
        gym.make_vec(
            SENTIMENT,
            8,
            vectorization_mode="vector_entry_point",
            autoreset_mode=AutoresetMode.SAME_STEP,
            **kw,
        ),
        device="cpu",
    )
    encoder = venv.embedder.encoder.model
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    agent = make_sb3_agent("sb3-ppo", venv, seed=0, device="cpu", n_steps=32).learn(512)
    eval_env = EmbeddingObservation(gym.make(SENTIMENT, **kw), embedder=venv.embedder)
    plain = gym.make(SENTIMENT, **kw)
    return {
        "trained": evaluate(agent, eval_env, n_episodes=24)["mean_score"],
        "random": evaluate(RandomAgent(plain), plain, n_episodes=24, deterministic=False)["mean_score"],
        "encoder": encoder,
        "before": before,
        "policy": agent.model.policy,
    }


def test_ppo_mlp_on_embedding_observation_beats_random(embedding_run: dict[str, Any]) -> None:
    assert embedding_run["trained"] >= embedding_run["random"] + 0.4, embedding_run


def test_the_encoder_never_receives_gradients(embedding_run: dict[str, Any]) -> None:
    encoder = embedding_run["encoder"]
    assert all(not p.requires_grad and p.grad is None for p in encoder.parameters())
    for k, v in encoder.state_dict().items():
        torch.testing.assert_close(v, embedding_run["before"][k], rtol=0, atol=0)
    policy_params = {id(p) for p in embedding_run["policy"].parameters()}
    assert not policy_params & {id(p) for p in encoder.parameters()}


def test_ppo_mlp_on_flat_observation_beats_random_on_target() -> None:
    venv = gym.make_vec(
        TARGET,
        8,
        vectorization_mode="sync",  # the documented way to get wrappers into make_vec
        wrappers=[FlatTokenObservation],
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
    )
    agent = make_sb3_agent("sb3-ppo", venv, seed=0, device="cpu", n_steps=32).learn(2000)
    plain = gym.make(TARGET)
    random_score = evaluate(RandomAgent(plain), plain, deterministic=False)["mean_score"]
    trained = evaluate(agent, FlatTokenObservation(gym.make(TARGET)))["mean_score"]
    assert trained >= random_score + 0.15, (trained, random_score)


# -- embedding observation on multi-turn ids ------------------------------------------------------------------------
def test_multi_turn_embedding_splits_at_the_last_assistant_separator_and_counts_turns() -> None:
    table = np.random.default_rng(0).normal(size=(8192, 8)).astype(np.float32)
    base = gym.make("aligngym/Dialogue-Token-v0", turn_scorer="length", max_turn_tokens=3, max_turns=2)
    env = EmbeddingObservation(base, input_embeddings=table, normalize=False)
    emb = env.embedder
    assert env.observation_space.shape == (2 * 8 + 2,)
    obs, _ = env.reset(seed=0)
    history = base.unwrapped._obs()["input_ids"][: int(base.unwrapped._obs()["attention_mask"].sum())]
    np.testing.assert_allclose(obs[:8], table[history].mean(0), rtol=1e-5)  # the whole history so far
    np.testing.assert_array_equal(obs[8:16], 0.0)  # no assistant token yet
    np.testing.assert_allclose(obs[-2:], [1.0, 1.0])
    obs, *_ = env.step(int(np.flatnonzero(base.unwrapped.action_masks())[5]))
    raw = base.unwrapped._obs()
    last = raw["input_ids"][int(raw["attention_mask"].sum()) - 1]
    np.testing.assert_allclose(obs[8:16], table[[last]].mean(0), rtol=1e-5)  # the turn in progress
    np.testing.assert_allclose(obs[-2:], [2 / 3, 1.0])
    done = False
    while not done:  # finish turn 1
        obs, _, done, _, info = env.step(int(np.flatnonzero(base.unwrapped.action_masks())[5]))
        if info.get("turn") == 1:
            break
    np.testing.assert_allclose(obs[-2:], [1.0, 0.5])  # a fresh turn, one of two turns left
    assert emb.multi_turn and env.observation_space.contains(obs)


def test_multi_turn_vector_embedding_marks_the_final_observation() -> None:
    table = np.random.default_rng(0).normal(size=(8192, 8)).astype(np.float32)
    venv = VectorEmbeddingObservation(
        gym.make_vec("aligngym/Guess-Token-v0", num_envs=2), input_embeddings=table
    )
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (2, 18)
    np.testing.assert_allclose(obs[:, -2:], [[1.0, 1.0], [1.0, 1.0]])
    # row 0 asks " fly", row 1 guesses " cat" (the end)
    obs, _, terminated, _, _ = venv.step(np.array([0, 4]))
    assert terminated.tolist() == [False, True]
    np.testing.assert_allclose(obs[:, -2:], [[1.0, 0.75], [0.0, 0.0]])
    np.testing.assert_array_equal(obs[1, 8:16], 0.0)  # no turn in progress after the game is decided
