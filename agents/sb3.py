"""Stable-Baselines3 on aligngym envs: a token-embedding features extractor, an SB3 ``VecEnv`` over a Gymnasium
``VectorEnv``, an info callback for TensorBoard, and :func:`make_sb3_agent` (SB3 PPO / A2C / DQN / MaskablePPO behind
aligngym's :class:`~aligngym.agents.base.Agent` interface, with pickle-free safetensors checkpoints).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn
from torch import nn

from aligngym.agents.base import Agent, AgentConfig, Callback, CheckpointError, add_batch_dim
from aligngym.envs.wrappers import load_input_embeddings, runtime_of

POOLINGS = ("mean", "gru", "mean_gru")
AGENT_NAMES = ("sb3-ppo", "sb3-a2c", "sb3-dqn", "sb3-maskable-ppo")

#: SB3 constructor defaults for aligngym's short, end-rewarded episodes (undiscounted; overridable through
#: ``algo_kwargs``). On-policy ``n_steps`` is per sub-env: PPO's default is ``max(16, 256 // n_envs)``.
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"batch_size": 64, "n_epochs": 10, "learning_rate": 3e-3, "gamma": 1.0, "ent_coef": 0.01},
    "maskable-ppo": {"batch_size": 64, "n_epochs": 10, "learning_rate": 3e-3, "gamma": 1.0, "ent_coef": 0.01},
    "a2c": {"n_steps": 8, "learning_rate": 3e-3, "gamma": 1.0, "ent_coef": 0.05},
    "dqn": {
        "buffer_size": 10_000,  # SB3's 1e6 default with int64 Dict observations is gigabytes
        "learning_starts": 100,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "gamma": 1.0,
        "train_freq": 1,
        "gradient_steps": 1,
        "target_update_interval": 200,
        "exploration_fraction": 0.5,
        "exploration_final_eps": 0.02,
    },
}


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


# -- callbacks ------------------------------------------------------------------------------------------------------
class AlignmentInfoCallback(BaseCallback):
    """Logs aligngym's episode-end info to SB3's logger (TensorBoard with ``tensorboard_log=``): ``charts/score``
    and ``reward/<component>`` for every ``info["reward_components"]`` entry, as means over each logging interval.
    """

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", ())
        dones = self.locals.get("dones", ())
        for info, done in zip(infos, dones):
            if not done or "score" not in info:
                continue
            self.logger.record_mean("charts/score", float(info["score"]))
            for name, value in info.get("reward_components", {}).items():
                self.logger.record_mean(f"reward/{name}", float(value))
        return True


class _AgentBridge(BaseCallback):
    """Feeds :class:`SB3Agent`'s :class:`~aligngym.agents.base.MetricLogger` (``charts/*``, ``losses/*``) and calls
    the aligngym-style ``callback(agent, metrics)``; returning ``False`` from it stops ``learn``."""

    def __init__(self, agent: SB3Agent, callback: Callback | None, log_every: int) -> None:
        super().__init__()
        self.agent = agent
        self.user_callback = callback
        self.log_every = log_every
        self._returns: list[float] = []
        self._scores: list[float] = []
        self._lengths: list[int] = []
        self._ep_return: np.ndarray | None = None
        self._ep_len: np.ndarray | None = None
        self._last_log = 0
        self._last_saved = agent.num_timesteps
        self._stop = False

    def _on_training_start(self) -> None:
        n = self.training_env.num_envs if self.training_env is not None else 1
        self._ep_return = np.zeros(n)
        self._ep_len = np.zeros(n, dtype=np.int64)

    def _on_step(self) -> bool:
        assert self._ep_return is not None and self._ep_len is not None
        rewards = np.asarray(self.locals.get("rewards", np.zeros_like(self._ep_return)), dtype=np.float64)
        dones = np.asarray(self.locals.get("dones", np.zeros(len(rewards), dtype=bool)))
        infos = self.locals.get("infos", [{}] * len(rewards))
        self._ep_return += rewards
        self._ep_len += 1
        for i in np.flatnonzero(dones):
            self._returns.append(float(self._ep_return[i]))
            self._scores.append(float(infos[i].get("score", self._ep_return[i])))
            self._lengths.append(int(self._ep_len[i]))
            self._ep_return[i] = 0.0
            self._ep_len[i] = 0
        self.agent.num_timesteps = self.model.num_timesteps
        self.agent.num_episodes += int(dones.sum())
        self._last_saved = self.agent._maybe_checkpoint(self._last_saved)
        if self.model.num_timesteps - self._last_log >= self.log_every and self._returns:
            self._flush()
        return not self._stop

    def _flush(self) -> None:
        metrics: dict[str, float] = {
            "charts/episodic_return": float(np.mean(self._returns)),
            "charts/score": float(np.mean(self._scores)),
            "charts/episodic_length": float(np.mean(self._lengths)),
        }
        for key, value in self.model.logger.name_to_value.items():
            if not key.startswith("train/") or not isinstance(value, int | float | np.floating):
                continue
            name = key.split("/", 1)[1]
            if name == "learning_rate":
                metrics["charts/learning_rate"] = float(value)
            elif name not in ("n_updates", "clip_range"):  # counters and schedules, not losses
                metrics[f"losses/{name}"] = float(value)
        self.agent.logger.log(self.model.num_timesteps, **metrics)
        self._returns, self._scores, self._lengths = [], [], []
        self._last_log = self.model.num_timesteps
        if self.user_callback is not None and self.user_callback(self.agent, metrics) is False:
            self._stop = True

    def _on_training_end(self) -> None:
        if self._returns:
            self._flush()


# -- the agent ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SB3Config(AgentConfig):
    """An SB3 algorithm on an aligngym env (plus :class:`~aligngym.agents.base.AgentConfig`'s fields).

    :param algo: ``"ppo"``, ``"a2c"``, ``"dqn"`` or ``"maskable-ppo"`` (sb3-contrib).
    :param embed_dim: :class:`TokenEmbeddingExtractor` width (Dict observations).
    :param pooling: ``"mean"``, ``"gru"`` or ``"mean_gru"``.
    :param net_arch: hidden layers after the extractor.
    :param init_embeddings: a local causal-LM directory whose input embeddings start the token embeddings.
    :param freeze_embeddings: keep the token embeddings fixed.
    :param algo_kwargs: SB3 constructor arguments (JSON values), over :data:`ALGO_DEFAULTS`; e.g. ``n_steps``,
        ``learning_rate``, ``buffer_size`` (DQN: keep it small, a Dict int64 buffer of 1e6 steps is GBs).
    :param policy_kwargs: extra SB3 ``policy_kwargs`` (JSON values; ``activation_fn`` as a name like ``"ReLU"``).
    :param log_every: log ``charts/*`` to :attr:`Agent.logger` every this many env steps.
    :param n_envs: sub-envs when the agent is given an env id (SAME_STEP vector env through
        :class:`SB3VecEnvAdapter`; 1: a single ``gym.make`` env).
    :param verbose: SB3 verbosity.
    """

    algo: str = "ppo"
    embed_dim: int = 64
    pooling: str = "mean"
    net_arch: list[int] = dataclasses.field(default_factory=lambda: [64, 64])
    init_embeddings: str | None = None
    freeze_embeddings: bool = False
    algo_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    policy_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    log_every: int = 256
    n_envs: int = 1
    verbose: int = 0


def _algo_class(algo: str) -> type:
    if algo == "ppo":
        from stable_baselines3 import PPO

        return PPO
    if algo == "a2c":
        from stable_baselines3 import A2C

        return A2C
    if algo == "dqn":
        from stable_baselines3 import DQN

        return DQN
    if algo == "maskable-ppo":
        from sb3_contrib import MaskablePPO

        return MaskablePPO
    raise ValueError(f"unknown SB3 algo {algo!r}; expected one of 'ppo', 'a2c', 'dqn', 'maskable-ppo'")


def _to_sb3_env(env: Any) -> Any:
    """A Gymnasium ``VectorEnv`` becomes an :class:`SB3VecEnvAdapter` + ``VecMonitor``; other envs pass through."""
    if isinstance(env, gym.vector.VectorEnv):
        return VecMonitor(SB3VecEnvAdapter(env))
    return env


class SB3Agent(Agent):
    """An SB3 model (``self.model``) behind aligngym's :class:`~aligngym.agents.base.Agent` interface.

    ``learn`` runs SB3's ``learn`` with :class:`AlignmentInfoCallback` and logs ``charts/episodic_return``,
    ``charts/score`` and ``losses/*`` to :attr:`logger` (TensorBoard in ``log_dir``; SB3's own scalars, with
    ``reward/<component>``, go to ``log_dir/<ALGO>_<n>/``); ``predict`` is SB3's (MaskablePPO masks are derived from
    the observation, so a masked action is never chosen); ``save(dir)`` writes the policy's tensors to safetensors
    with ``agent.json`` (no pickle; optimizer moments and DQN's replay buffer are not saved). SB3's own
    ``self.model.save("x.zip")`` also works (SB3's format: it contains cloudpickled parts).
    """

    Config: ClassVar[type[AgentConfig]] = SB3Config
    algo_name = "sb3"

    def __init__(self, env: Any, config: SB3Config | None = None, *, init_embeddings: Any = None) -> None:
        """:param init_embeddings: overrides ``config.init_embeddings`` with any source
        :class:`TokenEmbeddingExtractor` takes (a ``transformers`` model object, a matrix), kept out of the config."""
        if isinstance(env, str):
            n_envs = config.n_envs if config is not None else 1
            env = gym.make(env) if n_envs == 1 else make_sb3_vec_env(env, n_envs)
        super().__init__(env, config)
        cfg = self.config
        assert isinstance(cfg, SB3Config)
        algo_cls = _algo_class(cfg.algo)
        sb3_env = _to_sb3_env(env)
        space = getattr(sb3_env, "observation_space", None)
        act_space = getattr(sb3_env, "action_space", None)
        if cfg.algo == "dqn" and not isinstance(act_space, spaces.Discrete):
            raise ValueError(
                f"DQN needs a Discrete action space, got {act_space}: use a -Token-v0 env (with action_vocab=[...] "
                "for a small Discrete(k)), or PPO/A2C for -Sequence-v0 (MultiDiscrete)"
            )
        policy_kwargs: dict[str, Any] = {
            k: _activation(v) if k == "activation_fn" else v for k, v in cfg.policy_kwargs.items()
        }
        if isinstance(space, spaces.Dict) and "input_ids" in space.spaces:
            policy = "MultiInputPolicy"
            policy_kwargs = {
                **token_policy_kwargs(
                    sb3_env if runtime_of(sb3_env) is not None else env,
                    embed_dim=cfg.embed_dim,
                    pooling=cfg.pooling,
                    net_arch=cfg.net_arch,
                    init_embeddings=init_embeddings if init_embeddings is not None else cfg.init_embeddings,
                    freeze_embeddings=cfg.freeze_embeddings,
                ),
                **policy_kwargs,
            }
        else:
            policy = "MultiInputPolicy" if isinstance(space, spaces.Dict) else "MlpPolicy"
            policy_kwargs = {"net_arch": list(cfg.net_arch), **policy_kwargs}
        kwargs = dict(ALGO_DEFAULTS.get(cfg.algo, {}))
        n_envs = int(getattr(sb3_env, "num_envs", 1))
        if cfg.algo in ("ppo", "maskable-ppo"):
            kwargs["n_steps"] = max(16, 256 // n_envs)
        kwargs.update(cfg.algo_kwargs)
        if cfg.algo in ("ppo", "maskable-ppo") and "batch_size" not in cfg.algo_kwargs:
            # a mini-batch never larger than a rollout (SB3 warns about truncated mini-batches)
            kwargs["batch_size"] = min(kwargs["batch_size"], kwargs["n_steps"] * n_envs)
        self.model = algo_cls(
            policy,
            sb3_env,
            seed=cfg.seed,
            device=self.device,
            policy_kwargs=policy_kwargs,
            verbose=cfg.verbose,
            tensorboard_log=cfg.log_dir,  # SB3's own scalars (train/*, charts/score, reward/*) in log_dir/<ALGO>_<n>/
            **kwargs,
        )
        self._runtime = runtime_of(env)

    def learn(self, total_timesteps: int, callback: Callback | Any = None) -> SB3Agent:
        """Train for ``total_timesteps`` more env steps.

        :param callback: ``callback(agent, metrics) -> False to stop`` (aligngym style, after each log) or an SB3
            ``BaseCallback`` / list of them.
        """
        if total_timesteps < 0:
            raise ValueError(f"total_timesteps must be >= 0, got {total_timesteps}")
        cfg = self.config
        assert isinstance(cfg, SB3Config)
        ours: Callback | None = None
        sb3_callbacks: list[BaseCallback] = [AlignmentInfoCallback()]
        if isinstance(callback, BaseCallback):
            sb3_callbacks.append(callback)
        elif isinstance(callback, list):
            sb3_callbacks.extend(callback)
        elif callback is not None:
            ours = callback
        sb3_callbacks.append(_AgentBridge(self, ours, cfg.log_every))
        self.model.learn(
            total_timesteps,
            callback=CallbackList(sb3_callbacks),
            reset_num_timesteps=False,
            progress_bar=cfg.progress_bar,
        )
        self.num_timesteps = int(self.model.num_timesteps)
        return self

    def action_masks_for(self, obs: Any) -> np.ndarray | None:
        """MaskablePPO's masks for a token observation (single (k,) or batched (B, k)), from the env's rules;
        ``None`` for other observations (flat, embedding: pass ``action_masks=`` to :meth:`predict`)."""
        rt = self._runtime
        if rt is None or not isinstance(obs, dict) or "input_ids" not in obs:
            return None
        batch, single = add_batch_dim(obs)
        act_space = getattr(self.env, "single_action_space", None) or self.env.action_space
        if isinstance(act_space, spaces.MultiDiscrete):
            one = np.concatenate([rt.action_mask(t) for t in range(rt.max_new_tokens)])
            masks = np.tile(one, (batch["input_ids"].shape[0], 1))
        else:
            generated = batch["attention_mask"][:, rt.max_prompt_tokens :].sum(1)
            masks = np.stack([rt.action_mask(int(g)) for g in generated])
        return masks[0] if single else masks

    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        """SB3's ``predict``; with MaskablePPO, ``action_masks`` default to the env's rules for ``obs``."""
        if getattr(self.config, "algo", None) == "maskable-ppo":
            masks = action_masks if action_masks is not None else self.action_masks_for(obs)
            return self.model.predict(obs, state, episode_start, deterministic, action_masks=masks)
        return self.model.predict(obs, state, episode_start, deterministic)

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def _tensor_groups(self) -> list[list[str]]:
        """State-dict names grouped by shared storage (PPO's shared extractor appears under three names)."""
        groups: dict[tuple[int, int], list[str]] = {}
        for name, t in self.model.policy.state_dict(keep_vars=True).items():
            groups.setdefault((t.data_ptr(), t.numel()), []).append(name)
        return list(groups.values())

    def state_arrays(self) -> dict[str, Any]:
        """``policy.<name>`` tensors of the SB3 policy (DQN: online and target Q-networks), each shared tensor once."""
        state = self.model.policy.state_dict()
        return {f"policy.{names[0]}": state[names[0]] for names in self._tensor_groups()}

    def load_state_arrays(self, arrays: dict[str, Any]) -> None:
        state = {k[len("policy.") :]: v for k, v in arrays.items() if k.startswith("policy.")}
        missing = [names for names in self._tensor_groups() if not any(n in state for n in names)]
        if missing:
            raise CheckpointError(f"checkpoint lacks the SB3 policy tensors {[g[0] for g in missing]}")
        try:
            self.model.policy.load_state_dict(state, strict=False)  # aliases of a shared tensor load with it
        except RuntimeError as err:
            raise CheckpointError(f"checkpoint tensors do not fit this SB3 policy: {err}") from err

    def extra_state(self) -> dict[str, Any]:
        extra = {"sb3_num_timesteps": int(self.model.num_timesteps), "n_updates": int(self.model._n_updates)}
        extractor = getattr(self.model.policy, "features_extractor", None)
        if isinstance(extractor, TokenEmbeddingExtractor):
            extra["token_dim"] = int(extractor.embed.weight.shape[1])
        return extra

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        self.model.num_timesteps = int(extra.get("sb3_num_timesteps", self.num_timesteps))
        self.model._n_updates = int(extra.get("n_updates", 0))

    @classmethod
    def _from_checkpoint(cls, env: Any, config: AgentConfig, meta: dict[str, Any]) -> SB3Agent:
        if env is None:
            raise CheckpointError("SB3Agent.load needs env= to rebuild the SB3 model")
        assert isinstance(config, SB3Config)
        # the saved tensors replace the initial embeddings: a zero matrix of the saved shape, no causal LM loaded
        token_dim = meta.get("extra", {}).get("token_dim")
        init = None
        if token_dim is not None and int(token_dim) != config.embed_dim:
            vocab = int(meta.get("signature", {}).get("vocab_size", 0))
            init = np.zeros((vocab, int(token_dim)), dtype=np.float32)
        agent = cls(env, dataclasses.replace(config, init_embeddings=None), init_embeddings=init)
        agent.config = config
        return agent


def make_sb3_agent(name: str, env: Any, seed: int = 0, device: str = "auto", **kwargs: Any) -> SB3Agent:
    """An SB3 agent by its benchmark name: ``"sb3-ppo"``, ``"sb3-a2c"``, ``"sb3-dqn"`` or ``"sb3-maskable-ppo"``.

    :param env: an aligngym env object (single, Gymnasium ``VectorEnv`` in SAME_STEP mode, SB3 ``VecEnv``) or an id.
    :param kwargs: :class:`SB3Config` fields (``embed_dim``, ``pooling``, ``net_arch``, ``algo_kwargs``,
        ``log_dir`` ...); any other keyword goes to the SB3 constructor (``n_steps=128``, ``buffer_size=5000`` ...).
    """
    if name not in AGENT_NAMES:
        raise ValueError(f"unknown SB3 agent {name!r}; expected one of {AGENT_NAMES}")
    fields = {f.name for f in dataclasses.fields(SB3Config)}
    ours = {k: v for k, v in kwargs.items() if k in fields}
    algo_kwargs = {**ours.pop("algo_kwargs", {}), **{k: v for k, v in kwargs.items() if k not in fields}}
    init = ours.pop("init_embeddings", None)
    if init is not None and isinstance(init, str | Path):
        ours["init_embeddings"] = str(init)
        init = None
    config = SB3Config(algo=name[len("sb3-") :], seed=seed, device=device, algo_kwargs=algo_kwargs, **ours)
    return SB3Agent(env, config, init_embeddings=init)


__all__ = [
    "AGENT_NAMES",
    "ALGO_DEFAULTS",
    "AlignmentInfoCallback",
    "SB3Agent",
    "SB3Config",
    "SB3VecEnvAdapter",
    "TokenEmbeddingExtractor",
    "make_sb3_agent",
    "make_sb3_vec_env",
    "token_policy_kwargs",
]
