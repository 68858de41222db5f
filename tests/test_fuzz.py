"""Property-based fuzzing over every registered id: valid input never crashes and stays in the spaces,
invalid input raises ValueError/TypeError naming the problem. The slow run does >= 10,000 steps per env."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aligngym.envs import TASKS, list_envs
from tests.conftest import env_kwargs

ENV_IDS = list(list_envs())
_ENVS: dict[str, gym.Env] = {}

#: text that stresses tokenizers and scorers: unicode, emoji, control characters, empty and very long strings
WEIRD_TEXT = st.one_of(
    st.just(""),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
    st.sampled_from(
        ["👋🏽🔥", "\x00\x01\x1b[31m", "\u202e reversed", "ﷺ𒐫", "\n\t\r", "a" * 5000, "word " * 2000]
    ),
)
SETTINGS = settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def get_env(env_id: str) -> gym.Env:
    if env_id not in _ENVS:
        _ENVS[env_id] = gym.make(env_id, **env_kwargs(env_id))
    return _ENVS[env_id]


def check_obs(env: gym.Env, obs: dict) -> None:
    assert env.observation_space.contains(obs), {
        k: (v.dtype, v.shape, v.min(), v.max()) for k, v in obs.items()
    }


def random_action(env: gym.Env, rng: np.random.Generator):
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return int(rng.integers(space.n))
    return rng.integers(0, space.nvec).astype(np.int64)


def run_episode(env: gym.Env, seed: int, prompt: str | None, rng: np.random.Generator) -> int:
    options = None
    if prompt is not None:  # a prompt of our own, with the context columns the task's scorer reads
        rt = env.unwrapped.runtime
        options = {"prompt": {"prompt": prompt, **{k: rt.rows[0][k] for k in rt.context_keys}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # long prompts are left-truncated with a warning
        obs, info = env.reset(seed=seed, options=options)
    check_obs(env, obs)
    steps, done = 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(random_action(env, rng))
        steps += 1
        check_obs(env, obs)
        assert isinstance(reward, float) and np.isfinite(reward)
        assert isinstance(terminated, bool) and truncated is False
        done = terminated
    assert isinstance(info["completion"], str) and np.isfinite(info["score"])
    if "gold_score" in info:
        assert isinstance(info["gold_score"], float) and np.isfinite(info["gold_score"])
    return steps


@pytest.mark.parametrize("env_id", ENV_IDS)
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), prompt=st.one_of(st.none(), WEIRD_TEXT))
def test_valid_input_never_crashes_and_stays_in_spaces(env_id: str, seed: int, prompt: str | None) -> None:
    env = get_env(env_id)
    run_episode(env, seed, prompt, np.random.default_rng(seed))


@pytest.mark.parametrize("env_id", ENV_IDS)
@SETTINGS
@given(
    bad=st.one_of(
        st.integers(min_value=-(2**40), max_value=-1),
        st.integers(min_value=100_000, max_value=2**40),
        st.floats(allow_nan=True),
        st.text(max_size=5),
        st.none(),
        st.lists(st.integers(-3, 3), min_size=0, max_size=40),
    )
)
def test_invalid_actions_raise_clear_errors(env_id: str, bad) -> None:
    env = get_env(env_id)
    env.reset(seed=0)
    space = env.action_space
    if isinstance(bad, list):
        bad = np.asarray(bad, dtype=np.int64)
        if isinstance(space, gym.spaces.MultiDiscrete) and bad.shape == space.shape and space.contains(bad):
            return  # that one is valid
        if isinstance(space, gym.spaces.Discrete) and bad.size == 1 and space.contains(int(bad.reshape(()))):
            return
    with pytest.raises((ValueError, TypeError)) as err:
        env.unwrapped.step(bad)
    assert any(word in str(err.value) for word in ("action", "shape", "dtype", "integer", "range"))


@pytest.mark.parametrize("env_id", ENV_IDS)
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1))
def test_same_seed_same_first_observation(env_id: str, seed: int) -> None:
    env = get_env(env_id)
    a, _ = env.reset(seed=seed)
    b, _ = env.reset(seed=seed)
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_ten_thousand_fuzzed_steps(env_id: str) -> None:
    # 10k MiniLM-scored completions take minutes on 2 cores: the long run fuzzes the env mechanics with a rule
    # scorer for the model-scored tasks and no gold (the real scorers and golds get the weird text in the
    # default-suite sample above)
    model_scored = any(name in env_id for name in ("Similarity", "Preference"))
    extra: dict = {"scorer": "length"} if model_scored else {}
    if "Dialogue" in env_id:  # its turns are scored by the preference reward model: the same rule scorer here
        extra["turn_scorer"] = "length"
    if gym.spec(env_id).kwargs.get("task") in TASKS:  # a shipped task: its gold scorer off
        extra["gold"] = False
    env = gym.make(env_id, **env_kwargs(env_id, **extra))
    rng = np.random.default_rng(1234)
    alphabet = [chr(c) for c in (*range(0, 0x80), 0xE9, 0x2603, 0x1F44B, 0x202E, 0xFFFD)]
    steps = 0
    while steps < 10_000:
        prompt = None
        if rng.random() < 0.5:
            n = int(rng.choice([0, 1, 10, 100, 3000]))
            prompt = "".join(rng.choice(alphabet, size=n))
        steps += run_episode(env, int(rng.integers(2**31)), prompt, rng)
    assert steps >= 10_000
