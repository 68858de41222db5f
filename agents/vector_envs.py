"""Vector-env helpers the agents share: wrap a single env into a ``SyncVectorEnv``, read the autoreset mode, read one
row of a batched ``info`` (``final_info`` under SAME_STEP), and the env's action masks per row or per step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

#: the autoreset modes the agents' rollouts handle (``AutoresetMode.value`` strings)
AUTORESET_MODES = ("NextStep", "SameStep", "Disabled")


def _returning(env: Any) -> Callable[[], Any]:
    """An env factory for ``SyncVectorEnv`` that hands back an existing env."""
    return lambda: env


def as_vector_env(env: Any, num_envs: int) -> Any:
    """``env`` if it is a Gymnasium ``VectorEnv``, else a ``SyncVectorEnv`` of ``env`` and ``num_envs - 1`` copies.

    :param env: a single env or a ``VectorEnv``.
    :param num_envs: sub-envs of the ``SyncVectorEnv`` built around a single env.
    :raises ValueError: when ``num_envs`` is not positive.
    """
    if isinstance(env, gym.vector.VectorEnv):
        return env
    if num_envs <= 0:
        raise ValueError(f"num_envs must be positive, got {num_envs}")
    copies = [env] + [copy.deepcopy(env) for _ in range(num_envs - 1)]
    return gym.vector.SyncVectorEnv([_returning(e) for e in copies])


def autoreset_mode(venv: Any, supported: tuple[str, ...] | None = None) -> str:
    """The vector env's autoreset mode as a string (``"NextStep"``, ``"SameStep"``, ``"Disabled"``, or another).

    :param venv: a Gymnasium ``VectorEnv`` (Gymnasium's default mode NEXT_STEP when its metadata names none).
    :param supported: when given, the modes the caller handles.
    :raises ValueError: when the mode is not in ``supported``.
    """
    mode = venv.metadata.get("autoreset_mode", "NextStep")
    name = str(getattr(mode, "value", mode))
    if supported is not None and name not in supported:
        raise ValueError(f"unsupported autoreset mode {name!r}; expected one of {', '.join(supported)}")
    return name


def info_value(info: dict[str, Any], key: str, i: int, mode: str) -> Any:
    """``info[key][i]`` of a vector env's step (``info["final_info"]`` under SAME_STEP autoreset), else ``None``.

    :param info: the batched info dict of ``venv.step``.
    :param key: the info key (``"score"``, ``"completion"`` ...).
    :param i: the sub-env's row.
    :param mode: :func:`autoreset_mode` of the vector env.
    """
    src = info.get("final_info", info) if mode == "SameStep" else info
    if not isinstance(src, dict) or key not in src:
        return None
    present = src.get(f"_{key}")
    if present is not None and not bool(np.asarray(present)[i]):
        return None
    return src[key][i]


def info_action_masks(venv: Any, info: dict[str, Any], n_actions: int) -> np.ndarray:
    """Valid actions bool (num_envs, n_actions) from ``info["action_mask"]`` or ``venv.action_masks()``; all valid
    when the env gives neither (rows whose ``_action_mask`` flag is off are all valid too).

    :raises ValueError: when a row has no valid action.
    """
    n = venv.num_envs
    valid = np.ones((n, n_actions), dtype=bool)
    if "action_mask" in info:
        masks = np.asarray(info["action_mask"])
        present = np.asarray(info.get("_action_mask", np.ones(n, dtype=bool)), dtype=bool)
        for i in np.flatnonzero(present):
            valid[i] = np.asarray(masks[i], dtype=bool).reshape(n_actions)
    elif callable(masks_fn := getattr(venv, "action_masks", None)):
        valid = np.asarray(masks_fn()).astype(bool).reshape(n, n_actions)
    if not valid.any(axis=1).all():
        raise ValueError("an env reported an action mask with no valid action")
    return valid


def step_action_masks(runtime: Any, device: Any = "cpu") -> torch.Tensor:
    """Valid actions of each completion step, bool (max_new_tokens, n_actions), from ``runtime.action_mask(t)``."""
    masks = np.stack([runtime.action_mask(t) for t in range(runtime.max_new_tokens)])
    return torch.as_tensor(masks, dtype=torch.bool, device=device)


def eos_action_of(runtime: Any) -> int | None:
    """The action index of the EOS token, or ``None`` when the env's actions cannot end a completion."""
    if runtime.eos_id is None:
        return None
    if runtime.action_ids is None:
        return int(runtime.eos_id)
    hits = np.flatnonzero(np.asarray(runtime.action_ids) == runtime.eos_id)
    return int(hits[0]) if hits.size else None


__all__ = [
    "AUTORESET_MODES",
    "as_vector_env",
    "autoreset_mode",
    "eos_action_of",
    "info_action_masks",
    "info_value",
    "step_action_masks",
]
