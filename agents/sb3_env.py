"""Stable-Baselines3 plumbing for aligngym envs: :class:`TokenEmbeddingExtractor` (token ids -> embedding -> pooled
features, with ids cast back to long), :func:`token_policy_kwargs`, and :class:`SB3VecEnvAdapter`, an SB3 ``VecEnv``
over a Gymnasium ``VectorEnv`` (SAME_STEP autoreset, per-row infos, action masks). :mod:`aligngym.agents.sb3` builds
the agents on top and re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn
from torch import nn

from aligngym.envs.core import runtime_of
from aligngym.envs.wrappers import load_input_embeddings

POOLINGS = ("mean", "gru", "mean_gru")


# -- features extractor ---------------------------------------------------------------------------------------------
class TokenEmbeddingExtractor(BaseFeaturesExtractor):
    """Features of aligngym's ``Dict(input_ids, attention_mask)`` observations for SB3 policies.

    Token ids (which SB3 hands over as floats: they are rounded back to ``long``) go through a learned
    ``nn.Embedding`` plus a learned position embedding (prompt positions counted from the prompt's first token, so
    left padding does not move them), then:

    * ``pooling="mean"``: a per-position ``Linear + GELU`` (so that the pooled vector depends on token order) and a
      masked mean, taken separately over the prompt slot and the completion slot when ``prompt_len`` is known;
    * ``pooling="gru"``: a GRU over the valid tokens only (padding never enters), state at the last one;
    * ``pooling="mean_gru"``: both, concatenated.

    With ``prompt_len`` the fraction of the completion budget used so far is appended (the state is Markov).

    :param observation_space: the env's ``Dict`` space with ``input_ids`` (L,) and ``attention_mask`` (L,).
    :param embed_dim: embedding width E; ``None`` = 64, or the LM's width with ``init_embeddings``.
    :param pooling: ``"mean"``, ``"gru"`` or ``"mean_gru"``.
    :param vocab_size: V; ``None`` reads ``input_ids.high + 1``.
    :param prompt_len: ``max_prompt_tokens`` of the env (first slot of the layout); ``None`` pools all L slots.
    :param gru_hidden: GRU width (default E).
    :param init_embeddings: start the token embeddings from a causal LM's input embeddings: a ``transformers``
        model object, a local model directory, an ``nn.Embedding`` or a (V', D) matrix with V' >= V (rows past V
        are dropped; the LM must use the env's tokenizer). A D different from ``embed_dim`` gets a linear projection.
    :param freeze_embeddings: keep the token embeddings fixed.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        embed_dim: int | None = None,
        pooling: str = "mean",
        vocab_size: int | None = None,
        prompt_len: int | None = None,
        gru_hidden: int | None = None,
        init_embeddings: Any = None,
        freeze_embeddings: bool = False,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict) or "input_ids" not in observation_space.spaces:
            raise TypeError(
                "TokenEmbeddingExtractor needs a Dict observation space with 'input_ids' and 'attention_mask', "
                f"got {observation_space}"
            )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        box = observation_space["input_ids"]
        if not isinstance(box, spaces.Box):
            raise TypeError(f"observation 'input_ids' must be a Box, got {box}")
        seq_len = int(box.shape[0])
        space_vocab = int(np.max(box.high)) + 1
        vocab = int(vocab_size) if vocab_size is not None else space_vocab
        if vocab < space_vocab:
            raise ValueError(f"vocab_size={vocab} is smaller than the observation's id range ({space_vocab})")
        if prompt_len is not None and not 0 < int(prompt_len) < seq_len:
            raise ValueError(f"prompt_len must be in [1, {seq_len - 1}] for L={seq_len}, got {prompt_len}")
        weight = (
            torch.from_numpy(load_input_embeddings(init_embeddings)) if init_embeddings is not None else None
        )
        if weight is not None and weight.shape[0] < vocab:
            raise ValueError(
                f"init_embeddings has {weight.shape[0]} rows but the env's vocabulary has {vocab} ids: the LM must "
                "use the env's tokenizer"
            )
        token_dim = int(weight.shape[1]) if weight is not None else int(embed_dim or 64)
        width = int(embed_dim) if embed_dim is not None else token_dim
        hidden = int(gru_hidden or width)
        with_progress = prompt_len is not None
        n_slots = 2 if prompt_len is not None else 1
        features = (
            (n_slots * width if pooling in ("mean", "mean_gru") else 0)
            + (hidden if pooling in ("gru", "mean_gru") else 0)
            + int(with_progress)
        )
        super().__init__(observation_space, features_dim=features)
        self.vocab_size = vocab
        self.seq_len = seq_len
        self.prompt_len = int(prompt_len) if prompt_len is not None else None
        self.pooling = pooling
        self.embed_dim = width
        self.embed = nn.Embedding(vocab, token_dim)
        if weight is not None:
            with torch.no_grad():
                self.embed.weight.copy_(weight[:vocab])
        if freeze_embeddings:
            self.embed.weight.requires_grad_(False)
        self.project = nn.Linear(token_dim, width) if token_dim != width else nn.Identity()
        self.position = nn.Embedding(seq_len, width)
        nn.init.normal_(self.position.weight, std=0.02)
        if pooling in ("mean", "mean_gru"):
            self.mix = nn.Sequential(nn.Linear(width, width), nn.GELU())
        if pooling in ("gru", "mean_gru"):
            self.gru = nn.GRU(width, hidden, batch_first=True)

    def _ids_and_mask(self, observations: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = observations["input_ids"]
        if ids.is_floating_point():  # SB3's preprocess_obs casts Box observations to float
            ids = ids.round()
        ids = ids.long().clamp_(0, self.vocab_size - 1)
        mask = observations["attention_mask"] > 0.5
        return ids, mask

    def _positions(self, mask: torch.Tensor) -> torch.Tensor:
        """Position ids (B, L): prompt tokens counted from the prompt's first token (left padding does not shift
        them), completion tokens by their slot index; without ``prompt_len``, counted from the first valid token."""
        rank = (mask.long().cumsum(1) - 1).clamp(min=0)
        if self.prompt_len is None:
            return rank
        slots = torch.arange(mask.shape[1], device=mask.device).expand_as(rank)
        return torch.where(slots < self.prompt_len, rank, slots)

    def _masked_mean(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = mask.unsqueeze(-1).to(h.dtype)
        return (h * w).sum(1) / w.sum(1).clamp(min=1.0)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """:param observations: ``input_ids`` and ``attention_mask`` (B, L), any dtype. :return: float (B, F)."""
        ids, mask = self._ids_and_mask(observations)
        if ids.ndim == 1:
            ids, mask = ids.unsqueeze(0), mask.unsqueeze(0)
        x = self.project(self.embed(ids)) + self.position(self._positions(mask))  # (B, L, E)
        parts: list[torch.Tensor] = []
        if self.pooling in ("mean", "mean_gru"):
            h = self.mix(x)
            if self.prompt_len is not None:
                p = self.prompt_len
                parts += [self._masked_mean(h[:, :p], mask[:, :p]), self._masked_mean(h[:, p:], mask[:, p:])]
            else:
                parts.append(self._masked_mean(h, mask))
        if self.pooling in ("gru", "mean_gru"):
            # valid tokens moved to the front (stable sort keeps their order); the GRU is causal, so its output at
            # the last valid token never saw the padding behind it (exact, and faster than packing on CPU)
            order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
            front = x.gather(1, order.unsqueeze(-1).expand_as(x))
            out, _ = self.gru(front)  # (B, L, H)
            last = (mask.sum(1) - 1).clamp(min=0)
            parts.append(out[torch.arange(out.shape[0], device=out.device), last])
        if self.prompt_len is not None:
            budget = self.seq_len - self.prompt_len
            parts.append(mask[:, self.prompt_len :].sum(1, keepdim=True).to(x.dtype) / budget)
        return torch.cat(parts, dim=1)


def _activation(name_or_cls: Any) -> Any:
    """``"ReLU"``/``"relu"``/``"Tanh"`` ... -> the ``torch.nn`` class (so configs stay JSON)."""
    if not isinstance(name_or_cls, str):
        return name_or_cls
    for attr in dir(nn):
        if attr.lower() == name_or_cls.lower() and isinstance(getattr(nn, attr), type):
            return getattr(nn, attr)
    raise ValueError(f"unknown activation {name_or_cls!r}; expected a torch.nn class name such as 'ReLU'")


def token_policy_kwargs(
    env: Any,
    embed_dim: int | None = 64,
    pooling: str = "mean",
    net_arch: Sequence[int] | dict[str, Sequence[int]] | None = (64, 64),
    init_embeddings: Any = None,
    freeze_embeddings: bool = False,
    **extractor_kwargs: Any,
) -> dict[str, Any]:
    """``policy_kwargs`` that make SB3's ``MultiInputPolicy`` read aligngym observations through
    :class:`TokenEmbeddingExtractor`: ``PPO("MultiInputPolicy", env, policy_kwargs=token_policy_kwargs(env))``.

    :param env: an aligngym env (single, Gymnasium vector or SB3 ``VecEnv``); V and ``max_prompt_tokens`` are read
        from it.
    :param embed_dim: embedding width (``None`` with ``init_embeddings``: the LM's width).
    :param pooling: ``"mean"``, ``"gru"`` or ``"mean_gru"``.
    :param net_arch: hidden layers after the extractor (SB3's ``net_arch``; ``None`` keeps SB3's default).
    :param init_embeddings: see :class:`TokenEmbeddingExtractor`; a local directory keeps SB3 ``.zip`` files small
        (a model object is cloudpickled into them by SB3).
    """
    space = getattr(env, "single_observation_space", None) or env.observation_space
    if not isinstance(space, spaces.Dict) or "input_ids" not in space.spaces:
        raise TypeError(
            "token_policy_kwargs needs an aligngym env with Dict(input_ids, attention_mask) observations, got "
            f"{space}; for flat or embedding observations use SB3's MlpPolicy"
        )
    runtime = runtime_of(env)
    kwargs: dict[str, Any] = {
        "embed_dim": embed_dim,
        "pooling": pooling,
        "vocab_size": int(np.max(space["input_ids"].high)) + 1,  # type: ignore[attr-defined]
        "prompt_len": runtime.max_prompt_tokens if runtime is not None else None,
        "freeze_embeddings": freeze_embeddings,
        **extractor_kwargs,
    }
    if init_embeddings is not None:
        kwargs["init_embeddings"] = init_embeddings
    out: dict[str, Any] = {
        "features_extractor_class": TokenEmbeddingExtractor,
        "features_extractor_kwargs": kwargs,
    }
    if net_arch is not None:
        out["net_arch"] = (
            {k: list(v) for k, v in net_arch.items()} if isinstance(net_arch, dict) else list(net_arch)
        )
    return out


# -- SB3 VecEnv over a Gymnasium VectorEnv --------------------------------------------------------------------------
def _same_step_mode() -> Any:
    mode = getattr(gym.vector, "AutoresetMode", None)
    if mode is None:  # gymnasium 1.0
        raise RuntimeError(
            "SB3VecEnvAdapter needs gymnasium >= 1.1 (AutoresetMode.SAME_STEP); this gymnasium has no autoreset modes"
        )
    return mode.SAME_STEP


def _unbatch_info(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s entries of a Gymnasium vector info dict (``key`` / ``_key`` mask pairs, nested dicts)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        present = infos.get(f"_{key}")
        if present is not None and not bool(np.asarray(present)[i]):
            continue
        if isinstance(value, dict):
            out[key] = _unbatch_info(value, i)
        elif isinstance(value, np.ndarray | list | tuple):
            item = value[i]
            out[key] = item.item() if isinstance(item, np.generic) else item
        else:
            out[key] = value
    return out


def _obs_row(obs: Any, i: int) -> Any:
    """Row ``i`` of a batched observation: a dict of (N, ...) arrays, an (N, ...) array, or (Gymnasium's
    ``final_obs``) an object array of per-env observations."""
    if isinstance(obs, dict):
        return {k: np.array(v[i]) for k, v in obs.items()}
    item = obs[i]
    if isinstance(item, dict):
        return {k: np.array(v) for k, v in item.items()}
    return np.array(item)


class SB3VecEnvAdapter(VecEnv):
    """An SB3 ``VecEnv`` over a Gymnasium ``VectorEnv`` in ``AutoresetMode.SAME_STEP`` (SB3 refuses Gymnasium's
    vector envs directly), so SB3 collects rollouts through aligngym's native batched env and scores whole batches.

    SB3's conventions are produced: a list of per-env info dicts; at an episode end the final step's info with
    ``terminal_observation`` (the last observation) and ``TimeLimit.truncated``, while the returned observation is
    already the next episode's first; the reset info goes to ``reset_infos``.

    :param venv: ``gym.make_vec(id, n, vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)`` or ``SyncVectorEnv(fns, autoreset_mode=SAME_STEP)``.
    :raises ValueError: if ``venv`` autoresets in another mode.
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        same_step = _same_step_mode()
        mode = venv.metadata.get("autoreset_mode")
        if mode is None or getattr(mode, "value", mode) != same_step.value:
            raise ValueError(
                f"SB3VecEnvAdapter needs a VectorEnv with autoreset_mode=SAME_STEP, got {mode!r}: build it with "
                "gym.make_vec(..., autoreset_mode=gym.vector.AutoresetMode.SAME_STEP) (native) or "
                "vector_kwargs={'autoreset_mode': gym.vector.AutoresetMode.SAME_STEP} (sync)"
            )
        self.venv = venv
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def reset(self) -> VecEnvObs:
        kwargs: dict[str, Any] = {}
        if any(s is not None for s in self._seeds):
            kwargs["seed"] = list(self._seeds)
        if any(self._options):
            first = self._options[0]
            if any(o != first for o in self._options):
                raise ValueError(
                    "a Gymnasium VectorEnv takes one options dict for all sub-envs; got differing ones"
                )
            kwargs["options"] = first
        obs, infos = self.venv.reset(**kwargs)
        self.reset_infos = [_unbatch_info(infos, i) for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        self._actions = None
        dones = np.logical_or(terminated, truncated)
        final_obs = infos.get("final_obs")
        final_info = infos.get("final_info", {})
        out_infos: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            if dones[i]:
                info = _unbatch_info(final_info, i) if final_info else {}
                if final_obs is None:
                    raise RuntimeError(
                        "the VectorEnv ended an episode without infos['final_obs'] (not SAME_STEP?)"
                    )
                info["terminal_observation"] = _obs_row(final_obs, i)
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                self.reset_infos[i] = {
                    k: v for k, v in _unbatch_info(infos, i).items() if k not in ("final_obs", "final_info")
                }
            else:
                info = {
                    k: v for k, v in _unbatch_info(infos, i).items() if k not in ("final_obs", "final_info")
                }
            out_infos.append(info)
        return obs, np.asarray(rewards, dtype=np.float32), dones, out_infos

    def close(self) -> None:
        self.venv.close()

    def _sub_envs(self) -> list[gym.Env] | None:
        envs = getattr(self.venv, "envs", None)
        return list(envs) if envs else None

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        idx = list(self._get_indices(indices))
        envs = self._sub_envs()
        if envs is not None:
            return [envs[i].get_wrapper_attr(attr_name) for i in idx]
        value = getattr(self.venv, attr_name)  # a native VectorEnv: one object answers for every row
        return [value for _ in idx]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        envs = self._sub_envs()
        if envs is None:
            setattr(self.venv, attr_name, value)
            return
        for i in self._get_indices(indices):
            envs[i].set_wrapper_attr(attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        idx = list(self._get_indices(indices))
        envs = self._sub_envs()
        if envs is not None:
            return [envs[i].get_wrapper_attr(method_name)(*method_args, **method_kwargs) for i in idx]
        # a native VectorEnv answers for the whole batch: (N, ...) rows, e.g. action_masks() -> (N, k)
        batched = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [batched[i] for i in idx]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        from stable_baselines3.common.env_util import is_wrapped

        idx = list(self._get_indices(indices))
        envs = self._sub_envs()
        if envs is None:
            return [False for _ in idx]
        return [is_wrapped(envs[i], wrapper_class) for i in idx]

    def get_images(self) -> Sequence[np.ndarray | None]:
        envs = self._sub_envs()
        if envs is None:
            return [None] * self.num_envs
        return [e.render() if self.render_mode == "rgb_array" else None for e in envs]  # type: ignore[misc]

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices


def make_sb3_vec_env(
    env_id: str,
    n_envs: int = 8,
    *,
    vectorization_mode: str | None = None,
    monitor: bool = True,
    **env_kwargs: Any,
) -> VecEnv:
    """``n_envs`` copies of ``env_id`` as an SB3 ``VecEnv`` (SAME_STEP autoreset, batched scoring when native).

    :param vectorization_mode: ``"vector_entry_point"`` (aligngym's native batched env), ``"sync"`` (Gymnasium's
        ``SyncVectorEnv`` of single envs) or ``None``: native when ``aligngym.envs.vector`` is importable, else sync.
    :param monitor: wrap in SB3's ``VecMonitor`` (episode returns in ``info["episode"]`` for SB3's logs).
    """
    same_step = _same_step_mode()
    mode = vectorization_mode
    if mode is None:
        import importlib.util

        mode = "vector_entry_point" if importlib.util.find_spec("aligngym.envs.vector") else "sync"
    if mode == "vector_entry_point":
        venv = gym.make_vec(
            env_id, num_envs=n_envs, vectorization_mode=mode, autoreset_mode=same_step, **env_kwargs
        )
    elif mode == "sync":
        venv = gym.make_vec(
            env_id,
            num_envs=n_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": same_step},
            **env_kwargs,
        )
    else:
        raise ValueError(f"vectorization_mode must be 'vector_entry_point', 'sync' or None, got {mode!r}")
    adapter: VecEnv = SB3VecEnvAdapter(venv)
    return VecMonitor(adapter) if monitor else adapter


__all__ = [
    "POOLINGS",
    "SB3VecEnvAdapter",
    "TokenEmbeddingExtractor",
    "make_sb3_vec_env",
    "token_policy_kwargs",
]
