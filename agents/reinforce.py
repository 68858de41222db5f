"""REINFORCE (Monte-Carlo policy gradient) for token-level envs, batched over a Gymnasium ``VectorEnv``.

Each update resets the vector env (seeded from the agent's generator), lets every sub-env play
``episodes_per_env`` whole episodes with the current policy, and takes one gradient step on
-(G_t - b) log pi(a_t | s_t) - ent_coef * H. The policy is :class:`~aligngym.agents.policies.GRUPolicy` or any module
with ``forward(input_ids, attention_mask) -> logits (B, n_actions)``. Run
``python -m aligngym.agents.reinforce --env aligngym/Target-Token-v0 --steps 20000``. The loop around ``collect``
and ``update`` is :meth:`aligngym.agents.base.Agent.learn`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from aligngym.agents.base import Agent, AgentConfig, CheckpointError, add_batch_dim
from aligngym.agents.gru_policy import GRUPolicy
from aligngym.agents.vector_envs import AUTORESET_MODES, autoreset_mode, info_action_masks, info_value

BASELINES = ("none", "moving_average", "value")
CUSTOM_POLICY_PREFIX = "custom:"

#: ``builder(vocab_size, n_actions, value_head, **policy_kwargs) -> nn.Module``, by the name in ``Config.policy``
PolicyBuilder = Callable[..., nn.Module]
POLICY_BUILDERS: dict[str, PolicyBuilder] = {}


def register_policy(name: str, builder: PolicyBuilder, *, overwrite: bool = False) -> None:
    """Make ``ReinforceConfig(policy=name, policy_kwargs={...})`` build a policy (saved and loaded by name).

    :param builder: ``builder(vocab_size=V, n_actions=k, value_head=bool, **policy_kwargs) -> nn.Module`` whose
        ``forward(input_ids (B, L) long, attention_mask (B, L)) -> logits (B, k)``; with ``value_head`` it also has
        ``value(...) -> (B,)`` or ``forward_with_value(...) -> (logits, values)``.
    """
    if name in POLICY_BUILDERS and not overwrite:
        raise ValueError(f"policy {name!r} is already registered; pass overwrite=True to replace it")
    if name.startswith(CUSTOM_POLICY_PREFIX):
        raise ValueError(f"policy names may not start with {CUSTOM_POLICY_PREFIX!r}")
    POLICY_BUILDERS[name] = builder


register_policy("gru", GRUPolicy)


@dataclasses.dataclass
class ReinforceConfig(AgentConfig):
    """Hyper-parameters of :class:`ReinforceAgent` (plus :class:`~aligngym.agents.base.AgentConfig`'s).

    :param learning_rate: Adam step size.
    :param gamma: discount of the Monte-Carlo returns G_t = sum_k gamma^k r_{t+k}.
    :param num_envs: copies of a single env run side by side (ignored when a ``VectorEnv`` is given).
    :param episodes_per_env: whole episodes each sub-env plays per update; a batch is
        num_envs * episodes_per_env episodes (sub-envs that are done idle until the slowest finishes).
    :param baseline: ``"none"``, ``"moving_average"`` (an exponential average of the batch-mean return, taken
        before the batch is added) or ``"value"`` (the policy's value head, fitted to G_t with ``vf_coef``).
    :param baseline_decay: weight of the old average in ``moving_average``.
    :param normalize_advantages: standardize G_t - b within the batch.
    :param ent_coef: entropy bonus weight.
    :param vf_coef: value-loss weight (``baseline="value"``).
    :param max_grad_norm: gradient clipping (0: off).
    :param minibatch_size: transitions per forward/backward pass, gradients accumulated into one step (0: all).
    :param policy: a registered policy name (``"gru"``) or an ``nn.Module`` (see :func:`register_policy`).
    :param policy_kwargs: keyword arguments of the registered builder (GRU: ``embed_dim``, ``hidden_size``,
        ``num_layers``).
    :param use_action_masks: respect ``info["action_mask"]`` (batched in vector envs) when the env gives it.
    :param log_interval: log every this many updates.
    """

    learning_rate: float = 3e-3
    gamma: float = 1.0
    num_envs: int = 8
    episodes_per_env: int = 2
    baseline: str = "moving_average"
    baseline_decay: float = 0.9
    normalize_advantages: bool = False
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 1.0
    minibatch_size: int = 0
    policy: Any = "gru"
    policy_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    use_action_masks: bool = True
    log_interval: int = 1

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        for name in ("num_envs", "episodes_per_env", "log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.minibatch_size < 0 or self.max_grad_norm < 0:
            raise ValueError(
                f"minibatch_size and max_grad_norm must be >= 0, got {self.minibatch_size}, {self.max_grad_norm}"
            )
        if not isinstance(self.policy, str | nn.Module):
            raise TypeError(
                f"policy must be a registered name or an nn.Module, got {type(self.policy).__name__}"
            )


def _masked(logits: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return logits
    return logits.masked_fill(~valid, torch.finfo(logits.dtype).min)


class ReinforceAgent(Agent):
    """REINFORCE with Monte-Carlo returns, an optional baseline and an entropy bonus (see the module docstring).

    ``learn`` works on a single token env (copied ``num_envs`` times into a ``SyncVectorEnv``) or on any Gymnasium
    ``VectorEnv`` with autoreset mode NEXT_STEP (after a sub-env ends, the next ``step`` resets it and ignores its
    action: that step is not learned from), SAME_STEP or DISABLED. Actions are sampled with the agent's numpy
    generator (Gumbel-max), so on CPU a run resumed from a checkpoint repeats an uninterrupted one exactly;
    checkpoints are written between updates and hold the policy, the Adam state and the baseline.

    Returns are not bootstrapped: an episode cut by an outer ``TimeLimit`` (``truncated``) is treated as complete.
    ``num_timesteps`` counts the transitions learned from; idle sub-env steps and autoreset steps are not counted.
    The last update may run past ``total_timesteps`` by up to one batch.

    :param env: a token-level env (``Discrete`` actions) or a ``VectorEnv`` of them.
    :param config: :class:`ReinforceConfig`; ``config.policy`` may be an ``nn.Module`` (then pass the same kind
        of module to :meth:`load` as ``policy=``).
    """

    Config: ClassVar[type[AgentConfig]] = ReinforceConfig
    algo_name: ClassVar[str] = "reinforce"

    def __init__(self, env: Any, config: ReinforceConfig | None = None) -> None:
        super().__init__(env, config)
        self.config: ReinforceConfig
        cfg = self.config
        if "n_actions" not in self.signature or "completion_len" in self.signature:
            space = getattr(env, "single_action_space", None) or env.action_space
            raise TypeError(f"ReinforceAgent needs a token env with a Discrete action space, got {space}")
        if "seq_len" not in self.signature:
            raise TypeError("ReinforceAgent needs Dict observations with input_ids / attention_mask")
        self.n_actions = int(self.signature["n_actions"])
        self.vocab_size = int(self.signature["vocab_size"])
        self.policy = self._build_policy(cfg).to(self.device)
        self._has_value = (
            callable(getattr(self.policy, "forward_with_value", None))
            or callable(getattr(self.policy, "value", None))
        ) and getattr(
            self.policy, "value_head", True
        ) is not None  # GRUPolicy(value_head=False) has the methods
        if cfg.baseline == "value" and not self._has_value:
            raise ValueError(
                f"baseline='value' needs a policy with value() or forward_with_value(); {type(self.policy).__name__} "
                "has no usable value head (GRUPolicy: value_head=True)"
            )
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.learning_rate)
        self.support = np.zeros(self.n_actions, dtype=bool)  # actions valid in at least one training state
        self.baseline_value: float | None = None
        self.num_updates = 0

    # -- policy ----------------------------------------------------------------------------------------------------
    def _build_policy(self, cfg: ReinforceConfig) -> nn.Module:
        if isinstance(cfg.policy, nn.Module):
            policy = cfg.policy
        else:
            name = cfg.policy
            if name.startswith(CUSTOM_POLICY_PREFIX):
                raise ValueError(
                    f"policy {name!r} names a custom module saved with a checkpoint; pass the module itself: "
                    "ReinforceAgent.load(path, env, policy=module)"
                )
            if name not in POLICY_BUILDERS:
                raise ValueError(f"unknown policy {name!r}; registered: {sorted(POLICY_BUILDERS)}")
            kwargs = {"value_head": cfg.baseline == "value", **cfg.policy_kwargs}
            policy = POLICY_BUILDERS[name](vocab_size=self.vocab_size, n_actions=self.n_actions, **kwargs)
        for attr, want in (("vocab_size", self.vocab_size), ("n_actions", self.n_actions)):
            got = getattr(policy, attr, want)
            if int(got) != want:
                raise ValueError(
                    f"policy {attr}={got} but the env has {attr}={want}; the policy must match the env"
                )
        return policy

    def _to_torch(self, ids: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.as_tensor(ids, dtype=torch.long, device=self.device),
            torch.as_tensor(mask, dtype=torch.long, device=self.device),
        )

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, with_value: bool) -> tuple[torch.Tensor, Any]:
        if not with_value:
            return self.policy(ids, mask), None
        fwv = getattr(self.policy, "forward_with_value", None)
        if callable(fwv):
            return fwv(ids, mask)
        value_fn: Callable[..., torch.Tensor] = getattr(self.policy, "value")  # noqa: B009
        return self.policy(ids, mask), value_fn(ids, mask)

    @torch.no_grad()
    def _logits(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.policy.eval()
        logits, _ = self._forward(*self._to_torch(ids, mask), with_value=False)
        if logits.shape != (len(ids), self.n_actions):
            raise ValueError(
                f"policy returned logits of shape {tuple(logits.shape)}, expected ({len(ids)}, {self.n_actions})"
            )
        return logits.float().cpu().numpy().astype(np.float64)

    def _choose(self, logits: np.ndarray, valid: np.ndarray, deterministic: bool) -> np.ndarray:
        """Gumbel-max sampling (or argmax) over the valid actions; logits float64 (B, k), valid bool (B, k)."""
        scores = np.where(valid, logits, -np.inf)
        if not deterministic:
            u = self.rng.random(logits.shape)
            scores = scores - np.log(-np.log(np.clip(u, 1e-300, 1.0 - 1e-16)))
        return np.argmax(scores, axis=1).astype(np.int64)

    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        """Actions for one observation or a batch (SB3's signature); ``state`` is passed through.

        :param obs: ``{"input_ids", "attention_mask"}``, int64 (L,) or (B, L).
        :param action_masks: bool (k,) or (B, k) valid actions; default: the actions valid anywhere in training.
        :returns: int64 action(s), () or (B,).
        """
        batch, single = add_batch_dim(obs)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        b = len(ids)
        if action_masks is not None:
            valid = np.broadcast_to(
                np.asarray(action_masks, dtype=bool).reshape(-1, self.n_actions), (b, self.n_actions)
            )
        else:
            support = self.support if self.support.any() else np.ones(self.n_actions, dtype=bool)
            valid = np.broadcast_to(support, (b, self.n_actions))
        actions = self._choose(self._logits(ids, mask), valid, deterministic)
        return (actions[0] if single else actions), state

    # -- rollouts --------------------------------------------------------------------------------------------------
    def _masks_from(self, venv: gym.vector.VectorEnv, info: dict[str, Any]) -> np.ndarray:
        if not self.config.use_action_masks:
            return np.ones((venv.num_envs, self.n_actions), dtype=bool)
        return info_action_masks(venv, info, self.n_actions)

    def collect(self, venv: gym.vector.VectorEnv) -> dict[str, Any]:
        """Play ``episodes_per_env`` whole episodes in every sub-env.

        :returns: the transitions (``ids``/``mask`` int64 (N, L), ``actions`` (N,), ``valid`` bool (N, k),
            ``returns`` float64 (N,)) and the loop's ``num_steps``, ``episode_returns``, ``episode_scores``,
            ``episode_lengths``.
        """
        cfg = self.config
        mode = autoreset_mode(venv, supported=AUTORESET_MODES)
        n = venv.num_envs
        obs, info = venv.reset(seed=int(self.rng.integers(2**31 - 1)))
        valid = self._masks_from(venv, info)
        done_eps = np.zeros(n, dtype=np.int64)
        skip = np.zeros(n, dtype=bool)  # NEXT_STEP: this step resets the sub-env and ignores its action
        open_eps: list[list[tuple[np.ndarray, np.ndarray, int, np.ndarray, float]]] = [[] for _ in range(n)]
        steps: list[tuple[np.ndarray, np.ndarray, int, np.ndarray]] = []
        returns: list[float] = []
        ep_returns, ep_scores, ep_lengths = [], [], []
        while (done_eps < cfg.episodes_per_env).any():
            ids, mask = np.asarray(obs["input_ids"]), np.asarray(obs["attention_mask"])
            actions = self._choose(self._logits(ids, mask), valid, deterministic=False)
            next_obs, rewards, terminated, truncated, info = venv.step(actions)
            active = (done_eps < cfg.episodes_per_env) & ~skip
            ended = np.asarray(terminated) | np.asarray(truncated)
            for i in np.flatnonzero(active):
                self.support |= valid[i]
                open_eps[i].append(
                    (ids[i].copy(), mask[i].copy(), int(actions[i]), valid[i].copy(), float(rewards[i]))
                )
                if ended[i]:
                    episode, open_eps[i] = open_eps[i], []
                    g, gs = 0.0, []
                    for *_, r in reversed(episode):
                        g = r + cfg.gamma * g
                        gs.append(g)
                    gs.reverse()
                    steps.extend(t[:4] for t in episode)
                    returns.extend(gs)
                    ep_returns.append(float(sum(t[4] for t in episode)))
                    score = info_value(info, "score", int(i), mode)
                    ep_scores.append(float(score) if score is not None else ep_returns[-1])
                    ep_lengths.append(len(episode))
                    done_eps[i] += 1
            skip = ended & (mode == "NextStep")
            obs = next_obs
            valid = self._masks_from(venv, info)
            if mode == "Disabled" and ended.any():
                obs, reset_info = venv.reset(options={"reset_mask": ended})
                valid[ended] = self._masks_from(venv, reset_info)[ended]
        return {
            "ids": np.stack([s[0] for s in steps]),
            "mask": np.stack([s[1] for s in steps]),
            "actions": np.array([s[2] for s in steps], dtype=np.int64),
            "valid": np.stack([s[3] for s in steps]),
            "returns": np.asarray(returns, dtype=np.float64),
            "num_steps": len(returns),
            "episode_returns": ep_returns,
            "episode_scores": ep_scores,
            "episode_lengths": ep_lengths,
        }

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One policy-gradient step on -(G_t - b) log pi(a_t | s_t) - ent_coef * H (+ vf_coef * value loss)."""
        cfg = self.config
        returns = batch["returns"]
        use_value = cfg.baseline == "value"
        if cfg.baseline == "moving_average":
            mean_return = float(returns.mean())
            b = mean_return if self.baseline_value is None else self.baseline_value
            self.baseline_value = cfg.baseline_decay * b + (1 - cfg.baseline_decay) * mean_return
            base = np.full_like(returns, b)
        else:
            base = np.zeros_like(returns)
        n = len(returns)
        ids_t, mask_t = self._to_torch(batch["ids"], batch["mask"])
        actions_t = torch.as_tensor(batch["actions"], device=self.device)
        valid_t = torch.as_tensor(batch["valid"], device=self.device)
        returns_t = torch.as_tensor(returns, dtype=torch.float32, device=self.device)
        base_t = torch.as_tensor(base, dtype=torch.float32, device=self.device)
        if use_value:  # the learned baseline of every step, before this update
            with torch.no_grad():
                self.policy.eval()
                base_t = self._forward(ids_t, mask_t, with_value=True)[1].float()
        adv = returns_t - base_t
        if cfg.normalize_advantages and n > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        self.policy.train()
        self.optimizer.zero_grad(set_to_none=True)
        chunk = cfg.minibatch_size or n
        sums = {"policy_loss": 0.0, "entropy": 0.0, "value_loss": 0.0}
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            logits, values = self._forward(ids_t[sl], mask_t[sl], with_value=use_value)
            logp = torch.log_softmax(_masked(logits.float(), valid_t[sl]), dim=-1)
            logp_a = logp.gather(1, actions_t[sl, None]).squeeze(1)
            entropy = -(logp.exp() * logp).sum(-1)
            weight = (sl.stop - sl.start) / n
            policy_loss = -(logp_a * adv[sl]).mean()
            loss = policy_loss - cfg.ent_coef * entropy.mean()
            value_loss = torch.zeros((), device=self.device)
            if use_value:
                value_loss = 0.5 * (values.float() - returns_t[sl]).pow(2).mean()
                loss = loss + cfg.vf_coef * value_loss
            (loss * weight).backward()
            sums["policy_loss"] += float(policy_loss.detach()) * weight
            sums["entropy"] += float(entropy.mean().detach()) * weight
            sums["value_loss"] += float(value_loss.detach()) * weight
        grad_norm = 0.0
        if cfg.max_grad_norm > 0:
            grad_norm = float(nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm))
        self.optimizer.step()
        self.num_updates += 1
        out = {f"losses/{k}": v for k, v in sums.items()}
        out["losses/grad_norm"] = grad_norm
        out["losses/baseline"] = float(base_t.mean())
        return out

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def save(self, path: Any) -> Any:
        """As :meth:`Agent.save`; a module given as ``config.policy`` is recorded by class name only."""
        cfg = self.config
        if isinstance(cfg.policy, nn.Module):
            label = f"{CUSTOM_POLICY_PREFIX}{type(cfg.policy).__module__}.{type(cfg.policy).__qualname__}"
            self.config = dataclasses.replace(cfg, policy=label)
        try:
            return super().save(path)
        finally:
            self.config = cfg

    @classmethod
    def _from_checkpoint(cls, env: Any, config: AgentConfig, meta: dict[str, Any]) -> ReinforceAgent:
        if env is None:
            raise CheckpointError("ReinforceAgent.load needs env= to rebuild the agent")
        policy = getattr(config, "policy", "gru")
        if isinstance(policy, str) and policy.startswith(CUSTOM_POLICY_PREFIX):
            raise CheckpointError(
                f"this checkpoint holds a custom policy ({policy[len(CUSTOM_POLICY_PREFIX) :]}); pass an untrained "
                "instance: ReinforceAgent.load(path, env, policy=module)"
            )
        assert isinstance(config, ReinforceConfig)
        return cls(env, config)

    def state_arrays(self) -> dict[str, Any]:
        """``policy.<name>`` tensors, ``optim.<i>.<key>`` Adam state, ``support`` uint8 (k,)."""
        arrays: dict[str, Any] = {f"policy.{k}": v for k, v in self.policy.state_dict().items()}
        for idx, st in self.optimizer.state_dict()["state"].items():
            for key, value in st.items():
                arrays[f"optim.{idx}.{key}"] = torch.as_tensor(value).reshape(-1) if key == "step" else value
        arrays["support"] = torch.as_tensor(self.support.astype(np.uint8))
        return arrays

    def load_state_arrays(self, arrays: dict[str, Any]) -> None:
        policy_sd = {k[len("policy.") :]: v for k, v in arrays.items() if k.startswith("policy.")}
        own = self.policy.state_dict()
        missing, unexpected = sorted(set(own) - set(policy_sd)), sorted(set(policy_sd) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint policy does not fit: missing {missing}, unexpected {unexpected}"
            )
        for k, v in policy_sd.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise CheckpointError(
                    f"checkpoint tensor policy.{k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}"
                )
        self.policy.load_state_dict(policy_sd)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in arrays.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v.reshape(()) if key == "step" else v
        if state:
            sd = self.optimizer.state_dict()
            try:
                self.optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
            except (ValueError, KeyError, RuntimeError) as err:
                raise CheckpointError(f"checkpoint optimizer state does not fit the policy: {err}") from err
        if "support" in arrays:
            support = arrays["support"].cpu().numpy().astype(bool)
            if support.shape != (self.n_actions,):
                raise CheckpointError(
                    f"checkpoint 'support' has shape {support.shape}, expected ({self.n_actions},)"
                )
            self.support = support

    def extra_state(self) -> dict[str, Any]:
        return {"baseline_value": self.baseline_value, "num_updates": self.num_updates}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        self.baseline_value = extra.get("baseline_value")
        self.num_updates = int(extra.get("num_updates", 0))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train REINFORCE-GRU on an env id, evaluate it on the test split and compare with a random agent."""
    from aligngym.agents.cli import agent_parser, train_and_compare

    parser = agent_parser(__doc__.splitlines()[0], "aligngym/Target-Token-v0", 20_000)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--baseline", choices=BASELINES, default="moving_average")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--ent-coef", type=float, default=0.01)
    parser.add_argument(
        "--action-vocab", nargs="*", default=None, help="restrict actions to these single tokens"
    )
    parser.add_argument("--eval-episodes", type=int, default=None, help="default: every test prompt once")
    args = parser.parse_args(argv)
    cfg = ReinforceConfig(
        seed=args.seed,
        device=args.device,
        num_envs=args.num_envs,
        baseline=args.baseline,
        learning_rate=args.learning_rate,
        ent_coef=args.ent_coef,
        log_dir=args.log_dir,
    )
    return train_and_compare(ReinforceAgent, cfg, args, eval_episodes=args.eval_episodes)


if __name__ == "__main__":
    main()
