"""Self-play REINFORCE, PPO and GRPO on aligngym's PettingZoo text games (one policy per agent, or one shared).

:class:`SelfPlayTrainer` runs ``num_envs`` copies of a Parallel env in lock-step and samples every acting agent's
action from its policy. ``"reinforce"`` takes one step on -(G_t - b) log pi(a_t | s_t) - ent_coef * H (G_t: the
agent's own return-to-go, b: a moving average of it); ``"ppo"`` and ``"grpo"`` take clipped-surrogate steps.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aligngym.agents.gru_policy import GRUPolicy
from aligngym.agents.pg_losses import clipped_surrogate, masked_mean, optimizer_step, ratio_stats

POLICIES = ("gru", "tabular")
ALGORITHMS = ("reinforce", "ppo", "grpo")
CONFIG_FILE = "selfplay.json"
WEIGHTS_FILE = "weights.safetensors"


class HashedTabularPolicy(nn.Module):
    """A softmax policy with one row of logits per observed token sequence (a tabular policy for torch).

    The visible ids are hashed (a polynomial hash mod a 61-bit prime, then mod ``n_buckets``) to a row of an
    ``nn.Embedding`` of logits, so a new state needs no table growth; collisions are rare below ~n_buckets / 10
    distinct states. Same ``forward(input_ids, attention_mask) -> logits (B, n_actions)`` as :class:`GRUPolicy`.

    :param n_actions: k, the logits per state.
    :param seq_len: L, the observation length.
    :param n_buckets: rows of the table.
    """

    _PRIME = (1 << 61) - 1

    def __init__(self, n_actions: int, seq_len: int, n_buckets: int = 1 << 16) -> None:
        super().__init__()
        if n_actions <= 0 or seq_len <= 0 or n_buckets <= 0:
            raise ValueError(
                f"n_actions, seq_len and n_buckets must be positive, got {n_actions}, {seq_len}, {n_buckets}"
            )
        self.n_actions, self.n_buckets = int(n_actions), int(n_buckets)
        self.table = nn.Embedding(n_buckets, n_actions)
        nn.init.zeros_(self.table.weight)
        rng = np.random.default_rng(0)  # fixed: the hash must not depend on the run's seed
        mult = rng.integers(1 << 20, 1 << 30, size=seq_len, dtype=np.int64)
        self.mult: torch.Tensor
        self.register_buffer("mult", torch.as_tensor(mult), persistent=False)

    def bucket(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Row index (B,) of each observation: ids < 2^31 times multipliers < 2^30, summed mod 2^61 - 1."""
        x = (input_ids.long() + 1) * attention_mask.long()
        h = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        for start in range(0, x.shape[1], 4):  # partial sums stay below 2^63
            part = (x[:, start : start + 4] * self.mult[start : start + 4]).sum(-1)
            h = (h + part) % self._PRIME
        return h % self.n_buckets

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.table(self.bucket(input_ids, attention_mask))


@dataclasses.dataclass
class SelfPlayConfig:
    """Hyper-parameters of :class:`SelfPlayTrainer`.

    :param seed: seeds the trainer's numpy generator (actions, env seeds) and torch (policy init).
    :param device: ``"cpu"`` or ``"cuda"``.
    :param num_envs: episodes per update (env copies run in lock-step).
    :param learning_rate: Adam step size of every policy.
    :param ent_coef: entropy bonus weight.
    :param baseline_decay: weight of the old value in each agent's moving-average baseline.
    :param max_grad_norm: gradient clipping (0: off).
    :param policy: ``"gru"`` (:class:`~aligngym.agents.policies.GRUPolicy`) or ``"tabular"``
        (:class:`HashedTabularPolicy`: learns small games in seconds, does not generalise to unseen states).
    :param shared_policy: one policy for all agents (logits cut to each agent's action count) instead of one each.
    :param policy_kwargs: options of the policy class (GRU: ``embed_dim``, ``hidden_size``; tabular: ``n_buckets``).
    :param algorithm: ``"reinforce"`` (one step per batch), ``"ppo"`` (advantage G_t - b with the moving-average
        baseline b, no value model) or ``"grpo"`` (advantage: the agent's episode return normalised within its
        group of ``num_generations`` games from the same env seed, no baseline). PPO and GRPO minimise the clipped
        surrogate, with the sampling log-probs as the old ones, over ``n_epochs`` x ``n_minibatches`` steps.
    :param n_epochs: passes over each batch (``"ppo"`` / ``"grpo"``).
    :param n_minibatches: optimiser steps per pass; each agent's steps are split into this many shuffled parts.
    :param clip_range: epsilon of the ratio clip.
    :param normalize_advantage: ``"ppo"`` only: scale each agent's advantages by their batch std.
    :param num_generations: ``"grpo"`` only: games per group (same env seed); must divide ``num_envs``.
    """

    seed: int = 0
    device: str = "cpu"
    num_envs: int = 32
    learning_rate: float = 3e-3
    ent_coef: float = 0.01
    baseline_decay: float = 0.9
    max_grad_norm: float = 1.0
    policy: str = "gru"
    shared_policy: bool = False
    policy_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    algorithm: str = "reinforce"
    n_epochs: int = 4
    n_minibatches: int = 1
    clip_range: float = 0.2
    normalize_advantage: bool = False
    num_generations: int = 4

    def __post_init__(self) -> None:
        if self.num_envs <= 0 or self.learning_rate <= 0:
            raise ValueError(
                f"num_envs and learning_rate must be positive, got {self.num_envs}, {self.learning_rate}"
            )
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.n_epochs <= 0 or self.n_minibatches <= 0:
            raise ValueError(
                f"n_epochs and n_minibatches must be positive, got {self.n_epochs}, {self.n_minibatches}"
            )
        if not self.clip_range > 0:
            raise ValueError(f"clip_range must be positive, got {self.clip_range}")
        if self.algorithm == "grpo" and (self.num_generations < 2 or self.num_envs % self.num_generations):
            raise ValueError(
                f"grpo needs num_generations >= 2 dividing num_envs, got num_generations={self.num_generations} "
                f"with num_envs={self.num_envs}"
            )


class SelfPlayTrainer:
    """Self-play policy-gradient training of every agent of a PettingZoo Parallel text game.

    :param env_fn: a no-argument factory of the Parallel env (e.g. ``aligngym.envs.multiagent.referential_parallel_env``);
        it is called ``num_envs + 1`` times (the last copy is for :meth:`evaluate`).
    :param config: :class:`SelfPlayConfig`.
    :raises TypeError: when the env's observations are not aligngym Dict observations or its actions not Discrete.
    """

    def __init__(self, env_fn: Callable[[], Any], config: SelfPlayConfig | None = None) -> None:
        self.config = cfg = config if config is not None else SelfPlayConfig()
        self.env_fn = env_fn
        self.envs = [env_fn() for _ in range(cfg.num_envs)]
        probe = self.envs[0]
        self.agents: list[str] = list(probe.possible_agents)
        self.n_actions: dict[str, int] = {}
        vocab, seq_len = 0, 0
        for a in self.agents:
            space, obs_space = probe.action_space(a), probe.observation_space(a)
            if not hasattr(space, "n"):
                raise TypeError(f"agent {a!r} needs a Discrete action space, got {space}")
            if "input_ids" not in getattr(obs_space, "spaces", {}):
                raise TypeError(
                    f"agent {a!r} needs Dict(input_ids, attention_mask) observations, got {obs_space}"
                )
            self.n_actions[a] = int(space.n)
            vocab = max(vocab, int(np.max(obs_space["input_ids"].high)) + 1)
            seq_len = max(seq_len, int(obs_space["input_ids"].shape[0]))
        self.vocab_size = vocab
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.device = torch.device(cfg.device)

        def build(n: int) -> nn.Module:
            if cfg.policy == "tabular":
                return HashedTabularPolicy(n, seq_len, **cfg.policy_kwargs)
            return GRUPolicy(vocab, n, value_head=False, **cfg.policy_kwargs)

        if cfg.shared_policy:
            shared = build(max(self.n_actions.values()))
            self.policies = {a: shared for a in self.agents}
        else:
            self.policies = {a: build(self.n_actions[a]) for a in self.agents}
        self.modules = nn.ModuleDict({str(i): p for i, p in enumerate(self._unique_policies())}).to(
            self.device
        )
        self.optimizer = torch.optim.Adam(self.modules.parameters(), lr=cfg.learning_rate)
        self.baselines: dict[str, float | None] = {a: None for a in self.agents}
        self.num_episodes = 0
        self.num_updates = 0
        self.history: list[dict[str, float]] = []

    def _unique_policies(self) -> list[nn.Module]:
        out: list[nn.Module] = []
        for p in self.policies.values():
            if all(p is not q for q in out):
                out.append(p)
        return out

    # -- acting ----------------------------------------------------------------------------------------------------
    def _logits(
        self, agent: str, ids: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor
    ) -> torch.Tensor:
        x = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        m = torch.as_tensor(mask, dtype=torch.long, device=self.device)
        return self.policies[agent](x, m)[:, : self.n_actions[agent]].float()

    @torch.no_grad()
    def act(self, agent: str, obs: dict[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        """Actions of ``agent``: int64 (B,) for observations (B, L), or a 0-d array for one observation (L,)."""
        ids, mask = np.asarray(obs["input_ids"]), np.asarray(obs["attention_mask"])
        single = ids.ndim == 1
        if single:
            ids, mask = ids[None], mask[None]
        actions, _ = self._sample(agent, ids, mask, deterministic)
        return actions[0] if single else actions

    @torch.no_grad()
    def _sample(
        self, agent: str, ids: np.ndarray, mask: np.ndarray, deterministic: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Actions (B,) and their log-probs (B,) under the current policy, for observations (B, L)."""
        logits = self._logits(agent, ids, mask)
        scores = logits.cpu().numpy().astype(np.float64)
        if not deterministic:  # Gumbel-max with the trainer's generator: reproducible on any device
            u = self.rng.random(scores.shape)
            scores = scores - np.log(-np.log(np.clip(u, 1e-300, 1.0 - 1e-16)))
        actions = np.argmax(scores, axis=1).astype(np.int64)
        logp = torch.log_softmax(logits, dim=-1).cpu().numpy()
        return actions, logp[np.arange(len(actions)), actions].astype(np.float32)

    def play(
        self, envs: list[Any], deterministic: bool = False, seeds: np.ndarray | None = None
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """One episode in every env of ``envs`` (Parallel API: each live agent sends an action, the ones with
        ``infos[agent]["acting"]`` are sampled from their policy, the others send 0, which the env ignores).

        :param seeds: the env seeds, one per env (default: drawn from the trainer's generator).
        :returns: the rollout (``steps[agent]``: (env index, ids, mask, action, sampling log-prob) per acting step;
            ``rewards[i][agent]``: the reward accrued after each of those steps) and each agent's mean episode return.
        """
        if seeds is None:
            seeds = self.rng.integers(2**31 - 1, size=len(envs))
        elif len(seeds) != len(envs):
            raise ValueError(f"seeds must have one entry per env ({len(envs)}), got {len(seeds)}")
        state = [env.reset(seed=int(s)) for env, s in zip(envs, seeds)]
        obs = [s[0] for s in state]
        infos = [s[1] for s in state]
        live = [True] * len(envs)
        steps: dict[str, list[tuple[int, np.ndarray, np.ndarray, int, float]]] = {a: [] for a in self.agents}
        rewards: list[dict[str, list[float]]] = [{a: [] for a in self.agents} for _ in envs]
        totals = np.zeros((len(envs), len(self.agents)))
        while any(live):
            actions: list[dict[str, int]] = [{a: 0 for a in env.agents} for env in envs]
            for agent in self.agents:
                rows = [
                    i for i in range(len(envs)) if live[i] and infos[i].get(agent, {}).get("acting", False)
                ]
                if not rows:
                    continue
                ids = np.stack([obs[i][agent]["input_ids"] for i in rows])
                mask = np.stack([obs[i][agent]["attention_mask"] for i in rows])
                chosen, logp = self._sample(agent, ids, mask, deterministic)
                for k, i in enumerate(rows):
                    actions[i][agent] = int(chosen[k])
                    steps[agent].append((i, ids[k], mask[k], int(chosen[k]), float(logp[k])))
                    rewards[i][agent].append(0.0)
            for i, env in enumerate(envs):
                if not live[i]:
                    continue
                obs[i], rew, terms, truncs, infos[i] = env.step(actions[i])
                for j, agent in enumerate(self.agents):
                    r = float(rew.get(agent, 0.0))
                    totals[i, j] += r
                    if rewards[i][agent]:  # a reward before the agent's first action credits no action
                        rewards[i][agent][-1] += r
                if not env.agents or all(terms.values()) or all(truncs.values()):
                    live[i] = False
        stats = {a: float(totals[:, j].mean()) for j, a in enumerate(self.agents)}
        return {"steps": steps, "rewards": rewards}, stats

    # -- learning --------------------------------------------------------------------------------------------------
    def _returns(self, agent: str, rollout: dict[str, Any]) -> list[float]:
        """The return-to-go of each of ``agent``'s steps, in the order they were taken per env."""
        rewards = rollout["rewards"]
        returns: list[float] = []
        cursor = [0] * len(rewards)
        togo = [np.cumsum(ep[agent][::-1])[::-1].tolist() for ep in rewards]
        for i, *_ in rollout["steps"][agent]:
            returns.append(togo[i][cursor[i]])
            cursor[i] += 1
        return returns

    def update(self, rollout: dict[str, Any]) -> dict[str, float]:
        """Learn from one batch: one Adam step on every agent's REINFORCE loss (their sum when the policy is
        shared), or the clipped-surrogate epochs of ``"ppo"`` / ``"grpo"`` (:meth:`_clipped_update`)."""
        cfg = self.config
        if cfg.algorithm != "reinforce":
            return self._clipped_update(rollout)
        steps = rollout["steps"]
        self.optimizer.zero_grad(set_to_none=True)
        out: dict[str, float] = {}
        total = torch.zeros((), device=self.device)
        for agent in self.agents:
            if not steps[agent]:
                continue
            g = torch.as_tensor(self._returns(agent, rollout), dtype=torch.float32, device=self.device)
            mean = float(g.mean())
            b = mean if self.baselines[agent] is None else float(self.baselines[agent])  # type: ignore[arg-type]
            self.baselines[agent] = cfg.baseline_decay * b + (1 - cfg.baseline_decay) * mean
            ids = np.stack([s[1] for s in steps[agent]])
            mask = np.stack([s[2] for s in steps[agent]])
            actions = torch.as_tensor([s[3] for s in steps[agent]], device=self.device)
            logp = torch.log_softmax(self._logits(agent, ids, mask), dim=-1)
            logp_a = logp.gather(1, actions[:, None]).squeeze(1)
            entropy = -(logp.exp() * logp).sum(-1).mean()
            loss = -((g - b) * logp_a).mean() - cfg.ent_coef * entropy
            total = total + loss
            out[f"losses/{agent}/policy_loss"] = float(loss.detach())
            out[f"losses/{agent}/entropy"] = float(entropy.detach())
        total.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.modules.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.num_updates += 1
        return out

    def _advantages(self, agent: str, rollout: dict[str, Any]) -> np.ndarray:
        """Per-step advantages of ``agent``: PPO's G_t - b (b: the moving average, updated here), or GRPO's
        episode return normalised by the mean and std of its group (0 where the whole group scored the same)."""
        cfg = self.config
        if cfg.algorithm == "ppo":
            g = np.asarray(self._returns(agent, rollout), dtype=np.float64)
            b = float(g.mean()) if self.baselines[agent] is None else float(self.baselines[agent])  # type: ignore[arg-type]
            self.baselines[agent] = cfg.baseline_decay * b + (1 - cfg.baseline_decay) * float(g.mean())
            adv = g - b
            if cfg.normalize_advantage and len(adv) > 1:
                adv = adv / (adv.std() + 1e-8)
            return adv
        episode = np.array([sum(ep[agent]) for ep in rollout["rewards"]], dtype=np.float64)
        groups = episode.reshape(-1, cfg.num_generations)
        norm = (groups - groups.mean(1, keepdims=True)) / (groups.std(1, keepdims=True) + 1e-4)
        flat = norm.reshape(-1)
        return np.array([flat[s[0]] for s in rollout["steps"][agent]], dtype=np.float64)

    def _clipped_update(self, rollout: dict[str, Any]) -> dict[str, float]:
        """``n_epochs`` passes of ``n_minibatches`` Adam steps on the summed per-agent clipped surrogate."""
        cfg = self.config
        steps = rollout["steps"]
        data: dict[str, tuple[torch.Tensor, ...]] = {}
        for agent in self.agents:
            if not steps[agent]:
                continue
            advantages = self._advantages(agent, rollout)
            data[agent] = (
                torch.as_tensor(np.stack([s[1] for s in steps[agent]]), device=self.device),
                torch.as_tensor(np.stack([s[2] for s in steps[agent]]), device=self.device),
                torch.as_tensor([s[3] for s in steps[agent]], device=self.device),
                torch.as_tensor([s[4] for s in steps[agent]], dtype=torch.float32, device=self.device),
                torch.as_tensor(advantages, dtype=torch.float32, device=self.device),
            )
        sums: dict[str, float] = {}
        n_steps = 0
        for _ in range(cfg.n_epochs):
            parts = {
                a: np.array_split(self.rng.permutation(len(d[0])), cfg.n_minibatches) for a, d in data.items()
            }
            for k in range(cfg.n_minibatches):
                total = torch.zeros((), device=self.device)
                for agent, (ids, mask, actions, old, adv) in data.items():
                    idx = torch.as_tensor(parts[agent][k], dtype=torch.long, device=self.device)
                    if len(idx) == 0:
                        continue
                    logp = torch.log_softmax(self._logits(agent, ids[idx], mask[idx]), dim=-1)
                    logp_a = logp.gather(1, actions[idx, None]).squeeze(1)
                    ones = torch.ones_like(logp_a)
                    per_step, ratio, log_ratio = clipped_surrogate(
                        logp_a, old[idx], adv[idx], ones, cfg.clip_range
                    )
                    entropy = -(logp.exp() * logp).sum(-1).mean()
                    loss = masked_mean(per_step, ones) - cfg.ent_coef * entropy
                    total = total + loss
                    kl, clipfrac = ratio_stats(ratio, log_ratio, ones, cfg.clip_range)
                    for key, v in (
                        ("policy_loss", float(loss.detach())),
                        ("entropy", float(entropy.detach())),
                        ("approx_kl", kl),
                        ("clipfrac", clipfrac),
                    ):
                        sums[f"losses/{agent}/{key}"] = sums.get(f"losses/{agent}/{key}", 0.0) + v
                if total.requires_grad:  # an empty minibatch (n_minibatches > steps) takes no step
                    optimizer_step(self.optimizer, total, self.modules.parameters(), cfg.max_grad_norm)
                    n_steps += 1
        self.num_updates += 1
        return {k: v / max(n_steps, 1) for k, v in sums.items()}

    def learn(
        self, total_episodes: int, callback: Callable[[Any, dict[str, float]], Any] | None = None
    ) -> SelfPlayTrainer:
        """Play and update until ``total_episodes`` more episodes have been learned from (in batches of num_envs).

        :param callback: ``callback(trainer, metrics)`` after every update; returning ``False`` stops.
        """
        if total_episodes < 0:
            raise ValueError(f"total_episodes must be >= 0, got {total_episodes}")
        end = self.num_episodes + total_episodes
        t0 = time.perf_counter()
        while self.num_episodes < end:
            self.modules.eval()
            seeds = None
            if self.config.algorithm == "grpo":  # groups of num_generations games from one env seed
                n_groups = len(self.envs) // self.config.num_generations
                seeds = np.repeat(self.rng.integers(2**31 - 1, size=n_groups), self.config.num_generations)
            rollout, stats = self.play(self.envs, seeds=seeds)
            self.modules.train()
            metrics = self.update(rollout)
            self.num_episodes += len(self.envs)
            metrics.update({f"charts/{a}/episodic_return": v for a, v in stats.items()})
            metrics["charts/episodes"] = float(self.num_episodes)
            metrics["charts/seconds"] = time.perf_counter() - t0
            self.history.append(metrics)
            if callback is not None and callback(self, metrics) is False:
                break
        return self

    def evaluate(
        self, n_episodes: int = 100, deterministic: bool = True, seed: int = 12345
    ) -> dict[str, float]:
        """Mean episode return of every agent over ``n_episodes`` fresh episodes (seeded, no learning)."""
        saved = self.rng
        self.rng = np.random.default_rng(seed)
        try:
            self.modules.eval()
            batch = [self.env_fn() for _ in range(min(n_episodes, 64))]
            totals = {a: 0.0 for a in self.agents}
            done = 0
            while done < n_episodes:
                envs = batch[: min(len(batch), n_episodes - done)]
                _, stats = self.play(envs, deterministic)
                for a in self.agents:
                    totals[a] += stats[a] * len(envs)
                done += len(envs)
        finally:
            self.rng = saved
        return {a: v / n_episodes for a, v in totals.items()}

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``selfplay.json`` (config, agents, baselines, counters) and ``weights.safetensors`` to ``path``."""
        from safetensors.torch import save_file

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.modules.state_dict().items()}
        save_file(tensors, str(out / WEIGHTS_FILE))
        meta = {
            "config": dataclasses.asdict(self.config),
            "agents": self.agents,
            "n_actions": self.n_actions,
            "vocab_size": self.vocab_size,
            "baselines": self.baselines,
            "num_episodes": self.num_episodes,
            "num_updates": self.num_updates,
        }
        (out / CONFIG_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | Path, env_fn: Callable[[], Any]) -> SelfPlayTrainer:
        """A trainer rebuilt from :meth:`save` for the same game. :raises ValueError: when the game differs."""
        from safetensors.torch import load_file

        root = Path(path)
        meta = json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
        trainer = cls(env_fn, SelfPlayConfig(**meta["config"]))
        if trainer.agents != meta["agents"] or trainer.n_actions != meta["n_actions"]:
            raise ValueError(
                f"checkpoint is for agents {meta['agents']} with actions {meta['n_actions']}, the env has "
                f"{trainer.agents} with {trainer.n_actions}"
            )
        trainer.modules.load_state_dict(load_file(str(root / WEIGHTS_FILE)))
        trainer.baselines = dict(meta["baselines"])
        trainer.num_episodes, trainer.num_updates = int(meta["num_episodes"]), int(meta["num_updates"])
        return trainer
