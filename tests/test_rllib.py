"""RLlib integration: the flattened observation, registration with Ray Tune, and local PPO (``num_env_runners=0``).

The Ray tests skip when ``ray[rllib]`` is not importable (it pins an older gymnasium, so it lives in its own
virtualenv; see benchmarks/examples/rllib_ppo_token.py). The wrapper tests run everywhere.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import aligngym.envs
from aligngym.envs.rllib import FlatTokenOneHot, make_env, register_all

HAS_RLLIB = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.rllib") is not None
needs_rllib = pytest.mark.skipif(
    not HAS_RLLIB,
    reason="ray[rllib] is not importable here (optional extra 'rllib'; it pins gymnasium 1.2.2, so it lives in its "
    "own virtualenv: see benchmarks/examples/rllib_ppo_token.py)",
)
SENTIMENT_VOCAB = [" good", " great", " bad", " the", ".", "<|endoftext|>"]


@pytest.fixture(scope="module")
def ray_local():
    if not HAS_RLLIB:
        pytest.skip("ray[rllib] is not importable")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


def test_flat_observation_is_a_one_hot_per_visible_position():
    env = make_env("aligngym/Target-Token-v0")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    rows = obs.reshape(env.seq_len, env.width)
    raw = env.unwrapped._obs()
    np.testing.assert_array_equal(rows.sum(1), raw["attention_mask"])
    visible = np.flatnonzero(raw["attention_mask"])
    np.testing.assert_array_equal(env.vocab[rows[visible].argmax(1)], raw["input_ids"][visible])


def test_flat_env_passes_gymnasium_check_env():
    for env_id, kwargs in [
        ("aligngym/Target-Token-v0", {}),
        ("aligngym/Sentiment-Token-v0", {"action_vocab": SENTIMENT_VOCAB}),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(make_env(env_id, kwargs), skip_render_check=True)


def test_unknown_tokens_light_the_other_slot():
    env = make_env("aligngym/Target-Token-v0")
    obs, _ = env.reset(seed=0, options={"prompt": {"prompt": "Say: zebra quantum.", "target": "red"}})
    rows = obs.reshape(env.seq_len, env.width)
    assert rows[:, -1].sum() > 0


def test_full_vocabulary_sentiment_is_refused_with_advice():
    with pytest.raises(ValueError, match="one-hot observation would have"):
        FlatTokenOneHot(gym.make("aligngym/Sentiment-Token-v0", max_prompt_tokens=4000))


def test_register_all_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray.tune.registry", None)
    with pytest.raises(ImportError, match=r"aligngym\[rllib\]"):
        register_all()


def test_rllib_env_config_num_envs_is_not_passed_to_the_env():
    env = make_env("aligngym/Target-Token-v0", {"num_envs": 4, "max_new_tokens": 3})
    assert env.unwrapped.runtime.max_new_tokens == 3


@needs_rllib
def test_register_all_registers_every_id_with_tune():
    from ray.tune.registry import ENV_CREATOR, _global_registry

    ids = register_all()
    assert set(ids) == set(aligngym.envs.list_envs())
    creator = _global_registry.get(ENV_CREATOR, "aligngym/Target-Token-v0")
    assert isinstance(creator({}).observation_space, gym.spaces.Box)


@needs_rllib
def test_ppo_trains_locally_on_a_restricted_vocabulary(ray_local):
    from aligngym.envs.rllib import ppo_config

    config = ppo_config(
        "aligngym/Sentiment-Token-v0", {"action_vocab": SENTIMENT_VOCAB}, train_batch_size=128
    )
    assert config.num_env_runners == 0
    algo = config.build_algo()
    try:
        results = [algo.train() for _ in range(2)]
    finally:
        algo.stop()
    assert results[-1]["env_runners"]["num_env_steps_sampled_lifetime"] >= 256
    assert math.isfinite(results[-1]["env_runners"]["episode_return_mean"])


@needs_rllib
@pytest.mark.slow
def test_ppo_beats_random_on_target(ray_local):
    from aligngym.envs.rllib import ppo_config

    algo = ppo_config("aligngym/Target-Token-v0", seed=0).build_algo()
    try:
        returns = [algo.train()["env_runners"]["episode_return_mean"] for _ in range(12)]
    finally:
        algo.stop()
    assert max(returns[-3:]) > 0.3, returns  # random play returns about 0.13 on Target
