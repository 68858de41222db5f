"""RLlib integration (optional extra ``rllib``): register every aligngym id with Ray Tune and a PPO config that trains.

RLlib's default models want a flat ``Box`` observation, so the envs registered here are wrapped in
:class:`FlatTokenOneHot` (one-hot of each position's token over the ids the env can show). ``ray[rllib]`` pins an
older gymnasium (1.2.2 when checked): install it in its own virtualenv. Ray is imported only inside the functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import aligngym.envs  # registers the ids
from aligngym.envs.core import AlignmentEnv

#: most one-hot features :class:`FlatTokenOneHot` builds before it refuses (pass ``vocab=`` to narrow it)
MAX_ONEHOT_FEATURES = 200_000


class FlatTokenOneHot(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Flat ``Box(0, 1, (L * (K + 1),), float32)`` observation: per position, a one-hot over K known token ids.

    The K ids are those the env can show: every prompt token of its prompt set, every action token and the pad id
    (or ``vocab`` when given). A token outside them (a custom prompt at reset) lights the extra "other" slot.
    Empty (masked) positions are all zeros.

    :param env: an aligngym env (``Dict(input_ids, attention_mask)`` observation).
    :param vocab: token ids to one-hot; default: the env's prompt, action and pad ids.
    :raises ValueError: when L * (K + 1) exceeds :data:`MAX_ONEHOT_FEATURES`.
    """

    def __init__(self, env: gym.Env, vocab: Iterable[int] | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, vocab=None if vocab is None else [int(i) for i in vocab]
        )
        gym.ObservationWrapper.__init__(self, env)
        base = env.unwrapped
        if not isinstance(base, AlignmentEnv):
            raise TypeError(f"FlatTokenOneHot wraps an aligngym env, got {type(base).__name__}")
        rt = base.runtime
        if vocab is None:
            ids = set(np.concatenate(rt.prompt_ids).tolist()) | {rt.tokenizer.pad_id}
            ids |= set((rt.action_ids if rt.action_ids is not None else np.arange(rt.n_actions)).tolist())
        else:
            ids = {int(i) for i in vocab}
        self.vocab = np.asarray(sorted(ids), dtype=np.int64)
        self.seq_len = int(rt.seq_len)
        self.width = len(self.vocab) + 1  # + "other"
        size = self.seq_len * self.width
        if size > MAX_ONEHOT_FEATURES:
            raise ValueError(
                f"one-hot observation would have {size} features ({self.seq_len} positions x {self.width} ids); "
                f"the limit is {MAX_ONEHOT_FEATURES}: use action_vocab / fewer prompts, or pass vocab="
            )
        self._lookup = np.full(rt.vocab_size, len(self.vocab), dtype=np.int64)
        self._lookup[self.vocab] = np.arange(len(self.vocab))
        self.observation_space = spaces.Box(0.0, 1.0, shape=(size,), dtype=np.float32)

    def observation(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        slots = self._lookup[observation["input_ids"]]
        out = np.zeros((self.seq_len, self.width), dtype=np.float32)
        on = observation["attention_mask"] == 1
        out[np.flatnonzero(on), slots[on]] = 1.0
        return out.reshape(-1)

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()  # type: ignore[attr-defined]


def make_env(env_id: str, env_config: Mapping[str, Any] | None = None, *, flatten: bool = True) -> gym.Env:
    """``gym.make(env_id, **env_config)``, wrapped in :class:`FlatTokenOneHot` unless ``flatten=False``.

    RLlib's ``EnvContext`` (a dict) is accepted as ``env_config``; its ``num_envs`` (vector mode) is not an env option.
    """
    kwargs = {k: v for k, v in dict(env_config or {}).items() if k != "num_envs"}
    env = gym.make(env_id, **kwargs)
    return FlatTokenOneHot(env) if flatten else env


class _Creator:
    """Picklable env creator for ``ray.tune.register_env`` (Ray ships creators to its workers)."""

    def __init__(self, env_id: str, flatten: bool) -> None:
        self.env_id = env_id
        self.flatten = flatten

    def __call__(self, env_config: Mapping[str, Any] | None = None) -> gym.Env:
        return make_env(self.env_id, env_config, flatten=self.flatten)


def register_all(env_ids: Iterable[str] | None = None, *, flatten: bool = True) -> list[str]:
    """Register aligngym ids with ``ray.tune.register_env`` under the same names; returns the ids.

    Afterwards ``PPOConfig().environment("aligngym/Target-Token-v0", env_config={...})`` builds the env through
    :func:`make_env` (``env_config`` = ``gym.make`` options).

    :param env_ids: ids to register (default: every aligngym id).
    :param flatten: wrap in :class:`FlatTokenOneHot` (RLlib's default models need a flat Box).
    :raises ImportError: without ``ray[rllib]``.
    """
    try:
        from ray.tune.registry import register_env
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "aligngym.envs.rllib needs ray[rllib] (optional extra 'rllib'; it pins an older gymnasium, so use its own "
            "virtualenv): pip install 'aligngym[rllib]'"
        ) from err
    ids = list(env_ids) if env_ids is not None else list(aligngym.envs.list_envs())
    for env_id in ids:
        if env_id not in gym.registry:
            raise ValueError(
                f"unknown env id {env_id!r}; aligngym ids: {', '.join(aligngym.envs.list_envs())}"
            )
        register_env(env_id, _Creator(env_id, flatten))
    return ids


def ppo_config(
    env_id: str = "aligngym/Target-Token-v0",
    env_config: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    num_envs_per_env_runner: int = 8,
    train_batch_size: int = 512,
    lr: float = 1e-3,
) -> Any:
    """A PPO config that trains on a token-level aligngym env in this process (``num_env_runners=0``).

    ``ppo_config().build_algo().train()``; the env is registered (flattened) on the way. Token-level ids with a
    restricted vocabulary are the intended use (Target ships one; for others pass ``env_config={"action_vocab":
    [...]}``): a full-vocabulary ``Discrete(V)`` head is large and learns slowly.
    """
    from ray.rllib.algorithms.ppo import PPOConfig

    register_all([env_id])
    return (
        PPOConfig()
        .environment(env_id, env_config=dict(env_config or {}))
        .env_runners(num_env_runners=0, num_envs_per_env_runner=num_envs_per_env_runner)
        .training(
            gamma=1.0,
            lambda_=0.95,
            lr=lr,
            entropy_coeff=0.01,
            train_batch_size_per_learner=train_batch_size,
            minibatch_size=max(32, train_batch_size // 4),
            num_epochs=6,
        )
        .rl_module(model_config={"fcnet_hiddens": [128, 128]})
        .debugging(seed=seed)
    )
