"""Stable-Baselines3 on aligngym envs: :func:`make_sb3_agent` (SB3 PPO / A2C / DQN / MaskablePPO behind aligngym's
:class:`~aligngym.agents.base.Agent` interface, with pickle-free safetensors checkpoints) and an info callback for
TensorBoard. The features extractor and the ``VecEnv`` adapter live in :mod:`aligngym.agents.sb3_env` and are
re-exported here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import VecMonitor

from aligngym.agents.base import Agent, AgentConfig, Callback, CheckpointError, add_batch_dim
from aligngym.agents.sb3_env import (
    POOLINGS,
    SB3VecEnvAdapter,
    TokenEmbeddingExtractor,
    _activation,
    make_sb3_vec_env,
    token_policy_kwargs,
)
from aligngym.envs.core import runtime_of

AGENT_NAMES = ("sb3-ppo", "sb3-a2c", "sb3-dqn", "sb3-maskable-ppo")
#: SB3's ``train/<name>`` scalars under CleanRL's ``losses/<name>`` (the same key for the same thing in every agent)
SB3_TO_CLEANRL = {"clip_fraction": "clipfrac", "policy_gradient_loss": "policy_loss", "loss": "total_loss"}

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
            elif name == "entropy_loss":  # SB3 logs -H; CleanRL's losses/entropy is H
                metrics["losses/entropy"] = -float(value)
            elif name not in ("n_updates", "clip_range"):  # counters and schedules, not losses
                metrics[f"losses/{SB3_TO_CLEANRL.get(name, name)}"] = float(value)
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
    "POOLINGS",
    "AlignmentInfoCallback",
    "SB3Agent",
    "SB3Config",
    "SB3VecEnvAdapter",
    "TokenEmbeddingExtractor",
    "make_sb3_agent",
    "make_sb3_vec_env",
    "token_policy_kwargs",
]
