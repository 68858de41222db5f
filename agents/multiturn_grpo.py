"""GRPO for causal-LM policies on the multi-turn dialogue envs: G conversations per start state, a group baseline.

Each update draws ``prompts_per_update`` openings; for each, a vector env of G rows is reset to that opening
(``options={"prompt_index": i}``) and plays G conversations token by token (checked against the rebuilt history).
Advantages are group-relative: ``credit="episode"`` gives every assistant token (r - mean_g) / (std_g + eps) of its
conversation's return; ``credit="turn"`` gives the tokens of turn k the return from turn k on, normalised against
the group's returns from turn k (turn-level credit). The loss is the clipped surrogate plus beta * KL (k3) to a frozen
reference, with no value model; the loop is :meth:`aligngym.agents.base.Agent.learn`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch

from aligngym.agents.base import AgentConfig
from aligngym.agents.grpo import ADVANTAGES, group_advantages
from aligngym.agents.lm_agent import LMAgentConfig
from aligngym.agents.multiturn import Conversation, turn_level_returns
from aligngym.agents.multiturn_ppo import MultiTurnLMAgent
from aligngym.agents.pg_losses import k3_kl, sequence_mean_step

CREDITS = ("episode", "turn")


@dataclasses.dataclass
class MultiTurnGRPOConfig(LMAgentConfig, AgentConfig):
    """Hyper-parameters of :class:`MultiTurnGRPOAgent` (plus the agent and LM fields).

    :param learning_rate: Adam step size.
    :param num_generations: G, conversations per opening (a given ``VectorEnv`` must have G rows).
    :param prompts_per_update: openings (groups) per update.
    :param n_epochs: passes over each batch (1: on-policy).
    :param clip_range: ratio clip epsilon.
    :param beta: weight of the per-token KL to the reference (k3 estimator); 0 skips the reference.
    :param advantage: ``"group"``, ``"rloo"`` or ``"mean"`` (as :class:`~aligngym.agents.grpo.GRPOAgent`).
    :param credit: ``"episode"`` (every token of a conversation shares its group advantage) or ``"turn"`` (the tokens
        of turn k share the group advantage of the return from turn k on; conversations that ended earlier are not
        in turn k's group).
    :param gamma: discount over turns for ``credit="turn"``.
    :param max_grad_norm: gradient clipping (0: off).
    :param temperature: sampling temperature (the update scores the same tempered distribution).
    :param check_tolerance: raise when the update's log-probs differ from the sampling ones by more than this.
    """

    learning_rate: float = 2e-4
    num_generations: int = 8
    prompts_per_update: int = 2
    n_epochs: int = 1
    clip_range: float = 0.2
    beta: float = 0.04
    advantage: str = "group"
    credit: str = "episode"
    gamma: float = 1.0
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    check_tolerance: float | None = 1e-3

    def __post_init__(self) -> None:
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {ADVANTAGES}, got {self.advantage!r}")
        if self.credit not in CREDITS:
            raise ValueError(f"credit must be one of {CREDITS}, got {self.credit!r}")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (a group needs a baseline), got {self.num_generations}"
            )
        for name in ("prompts_per_update", "n_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.beta < 0 or self.learning_rate <= 0 or self.temperature <= 0:
            raise ValueError(
                "beta must be >= 0, learning_rate and temperature > 0, got "
                f"{self.beta}, {self.learning_rate}, {self.temperature}"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")


def token_advantages(
    groups: list[list[Conversation]], kind: str = "group", credit: str = "episode", gamma: float = 1.0
) -> list[np.ndarray]:
    """Group-relative advantages of every assistant token, one float64 array per conversation (groups in order).

    :param groups: conversations grouped by opening.
    :param kind: ``"group"``, ``"rloo"`` or ``"mean"`` (:func:`~aligngym.agents.grpo.group_advantages`).
    :param credit: ``"episode"`` or ``"turn"`` (see :class:`MultiTurnGRPOConfig`).
    :param gamma: discount over turns (``credit="turn"``).
    """
    out: list[np.ndarray] = []
    for group in groups:
        if credit == "episode":
            returns = torch.as_tensor([[c.episode_return for c in group]], dtype=torch.float64)
            adv = group_advantages(returns, kind)[0].numpy()
            out += [np.full(len(c.actions), a) for c, a in zip(group, adv)]
            continue
        # turn level: returns-to-go per turn, each turn index normalised over the conversations that reached it
        togo = [turn_level_returns(c.turn_rewards(), [1] * len(c.tokens_per_turn), gamma) for c in group]
        n_turns = max(len(g) for g in togo)
        adv_turn = [np.zeros(len(g)) for g in togo]
        for k in range(n_turns):
            members = [i for i, g in enumerate(togo) if len(g) > k]
            if len(members) < 2:
                continue  # no baseline for a turn only one conversation reached: advantage 0
            vals = torch.as_tensor([[togo[i][k] for i in members]], dtype=torch.float64)
            for i, a in zip(members, group_advantages(vals, kind)[0].numpy()):
                adv_turn[i][k] = a
        out += [np.repeat(a, c.tokens_per_turn) for a, c in zip(adv_turn, group)]
    return out


class MultiTurnGRPOAgent(MultiTurnLMAgent):
    """GRPO on a multi-turn dialogue token env: G conversations per opening, no value model (see the module docstring).

    ``num_timesteps`` counts the assistant's tokens. Logs ``losses/policy_loss``, ``losses/approx_kl``,
    ``losses/clipfrac``, ``charts/kl``, ``charts/reward_std`` (within-group std of returns, mean over groups),
    ``charts/success`` and ``charts/logprob_mismatch``.

    :param env: a dialogue env (copied ``num_generations`` times) or a ``VectorEnv`` of G of them.
    :param config: :class:`MultiTurnGRPOConfig`.
    """

    Config: ClassVar[type[AgentConfig]] = MultiTurnGRPOConfig
    algo_name: ClassVar[str] = "multiturn_grpo"

    def __init__(self, env: Any, config: MultiTurnGRPOConfig | None = None) -> None:
        super().__init__(env, config)
        self.config: MultiTurnGRPOConfig
        if self.config.beta == 0:
            self.reference = None
        g = self.config.num_generations
        num_envs = getattr(env, "num_envs", None)
        if num_envs is not None and num_envs != g:
            raise ValueError(
                f"MultiTurnGRPOAgent needs a vector env of num_generations={g} rows, got {num_envs}"
            )

    def rollout_envs(self) -> int:
        """A group per reset: ``num_generations`` copies of a single env."""
        return self.config.num_generations

    def collect(self, venv: Any) -> dict[str, Any]:
        """``prompts_per_update`` groups of G conversations, each group from one opening."""
        cfg = self.config
        openings = self.rng.integers(len(self.runtime.rows), size=cfg.prompts_per_update)
        groups = [self._play(venv, {"prompt_index": int(i)}) for i in openings]
        batch = self._pack([c for group in groups for c in group])
        adv = token_advantages(groups, cfg.advantage, cfg.credit, cfg.gamma)
        t_max = batch["positions"].shape[1]
        padded = np.zeros((len(adv), t_max), dtype=np.float32)
        for i, a in enumerate(adv):
            padded[i, : len(a)] = a
        batch["advantages"] = torch.as_tensor(padded, device=self.device)
        batch["reward_std"] = float(np.mean([np.std([c.episode_return for c in g], ddof=1) for g in groups]))
        return batch

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """``n_epochs`` steps on the clipped surrogate + beta * KL over every assistant token."""
        cfg = self.config
        assert self.optimizer is not None
        mask, adv = batch["token_mask"], batch["advantages"]
        everything = slice(None)
        lengths = mask.sum(-1).clamp(min=1.0)
        with torch.no_grad():
            ref_logp = None
            if self.reference is not None:
                ref_logp = self._forward(self.reference, batch, everything, with_values=False)[0]
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "approx_kl", "clipfrac", "kl")}
        old_logp: torch.Tensor | None = None
        mismatch = float("nan")
        for epoch in range(cfg.n_epochs):
            logp = self._forward(self.policy, batch, everything, with_values=False)[0]
            if epoch == 0:
                mismatch = self._check_logprobs(logp, batch)
                old_logp = logp.detach()
            assert old_logp is not None
            sequence_mean_step(
                self.optimizer,
                self.policy.parameters(),
                logp,
                old_logp,
                adv,
                mask,
                lengths,
                None if ref_logp is None else k3_kl(logp, ref_logp, mask),
                beta=cfg.beta,
                clip_range=cfg.clip_range,
                max_grad_norm=cfg.max_grad_norm,
                stats=stats,
            )
        self.num_updates += 1
        return {
            "losses/policy_loss": float(np.mean(stats["policy_loss"])),
            "losses/approx_kl": float(np.mean(stats["approx_kl"])),
            "losses/clipfrac": float(np.mean(stats["clipfrac"])),
            "charts/kl": float(np.mean(stats["kl"])),
            "charts/reward_std": batch["reward_std"],
            "charts/logprob_mismatch": mismatch,
            "charts/success": float(np.mean([c.success for c in batch["conversations"]])),
        }


__all__ = ["CREDITS", "MultiTurnGRPOAgent", "MultiTurnGRPOConfig", "token_advantages"]
