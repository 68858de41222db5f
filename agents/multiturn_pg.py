"""Multi-turn policy gradient for causal-LM policies on the dialogue envs, with turn-level credit.

:class:`MultiTurnPG` plays ``episodes_per_update`` conversations token by token from a
:class:`~aligngym.agents.policies.CausalLMPolicy` on a ``-Token-v0`` dialogue env
(:func:`~aligngym.agents.multiturn.play_conversations`, which checks every observation against the rebuilt history),
then scores every sampled token of every conversation in one forward pass over the exact token history
(:func:`~aligngym.agents.multiturn.history_forward`) and takes a REINFORCE step with turn-level returns
(:func:`~aligngym.agents.multiturn.turn_level_returns`). The update's log-probs are checked against the sampling
log-probs (``charts/logprob_mismatch``). For PPO and GRPO on the same envs see :mod:`aligngym.agents.multiturn_ppo`
and :mod:`aligngym.agents.multiturn_grpo`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from aligngym.agents.multiturn import (
    Conversation,
    history_forward,
    pack_conversations,
    play_conversations,
    sample_tokens,
    turn_level_returns,
)
from aligngym.agents.vector_envs import as_vector_env


@dataclasses.dataclass
class MultiTurnPGConfig:
    """Hyper-parameters of :class:`MultiTurnPG`.

    :param seed: seeds the sampling generator and the env resets.
    :param learning_rate: Adam step size.
    :param episodes_per_update: conversations per gradient step (the env is copied this many times).
    :param gamma: discount over turns (turn-level credit: all tokens of a turn share its return).
    :param temperature: sampling temperature (the update scores the same tempered distribution).
    :param max_grad_norm: gradient clipping (0: off).
    :param check_tolerance: raise when update and sampling log-probs differ by more than this (``None``: never).
    """

    seed: int = 0
    learning_rate: float = 1e-4
    episodes_per_update: int = 8
    gamma: float = 1.0
    temperature: float = 1.0
    max_grad_norm: float = 1.0
    check_tolerance: float | None = 1e-3

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.episodes_per_update <= 0 or self.temperature <= 0:
            raise ValueError(
                "learning_rate, episodes_per_update and temperature must be positive, got "
                f"{self.learning_rate}, {self.episodes_per_update}, {self.temperature}"
            )


class MultiTurnPG:
    """REINFORCE with turn-level credit and a batch-mean baseline for a causal-LM policy on a dialogue token env.

    :param env: a single ``aligngym/*-Token-v0`` dialogue env (``context_overflow`` ``"end"`` or ``"error"``: the
        update scores the history the policy saw).
    :param policy: a :class:`~aligngym.agents.policies.CausalLMPolicy` acting in the env (same tokenizer and
        ``action_vocab``; ``CausalLMPolicy.for_env(env)`` builds one).
    :param config: :class:`MultiTurnPGConfig`.
    """

    def __init__(self, env: Any, policy: nn.Module, config: MultiTurnPGConfig | None = None) -> None:
        self.env, self.policy = env, policy
        self.config = cfg = config if config is not None else MultiTurnPGConfig()
        self.runtime = env.unwrapped.runtime
        if getattr(self.runtime, "context_overflow", "end") == "truncate":
            raise ValueError(
                "MultiTurnPG needs context_overflow='end' or 'error': truncated histories are not exact"
            )
        self.venv = as_vector_env(env, cfg.episodes_per_update)
        self.rng = np.random.default_rng(cfg.seed)
        device = next(policy.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
        self.num_updates = 0
        self.history: list[dict[str, float]] = []

    def collect(self) -> list[Conversation]:
        """``episodes_per_update`` conversations, each checked against its rebuilt history."""
        self.policy.eval()  # no dropout: the update scores the distribution that was sampled
        return play_conversations(
            self.venv,
            lambda ids, mask, valid: sample_tokens(
                self.policy, ids, mask, valid, self.config.temperature, self.generator
            ),
            seed=int(self.rng.integers(2**31 - 1)),
        )

    def update(self, conversations: list[Conversation]) -> dict[str, float]:
        """One REINFORCE step: -(G_turn - b) * log pi over every assistant token, from the exact histories."""
        cfg = self.config
        batch = pack_conversations(conversations, int(self.runtime.tokenizer.pad_id), self.generator.device)
        pos, on = batch["positions"], batch["token_mask"]
        logp_all = history_forward(
            self.policy,
            batch["input_ids"],
            batch["attention_mask"],
            batch["assistant"],
            cfg.temperature,
            batch["valid"],
        )[0]
        logp = logp_all.gather(1, pos) * on
        sampled = batch["sampled_logp"].gather(1, pos) * on
        mismatch = float((logp.detach() - sampled).abs().max())
        if cfg.check_tolerance is not None and mismatch > cfg.check_tolerance:
            raise RuntimeError(
                f"update log-probs differ from the sampling log-probs by {mismatch:.2e} (> {cfg.check_tolerance}): "
                "the history scored is not the one sampled from"
            )
        returns = torch.zeros_like(logp)
        for i, c in enumerate(conversations):
            g = turn_level_returns(c.turn_rewards(), c.tokens_per_turn, cfg.gamma)
            returns[i, : len(g)] = torch.as_tensor(g, dtype=returns.dtype)
        baseline = float(np.mean([c.episode_return for c in conversations]))
        loss = -(((returns - baseline) * on) * logp).sum() / on.sum().clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.num_updates += 1
        return {
            "losses/policy_loss": float(loss.detach()),
            "charts/logprob_mismatch": mismatch,
            "charts/episodic_return": baseline,
            "charts/score": float(np.mean([c.score for c in conversations])),
        }

    def learn(self, n_updates: int) -> MultiTurnPG:
        """Collect and update ``n_updates`` times; metrics go to :attr:`history`."""
        for _ in range(n_updates):
            self.history.append(self.update(self.collect()))
        return self


__all__ = ["MultiTurnPG", "MultiTurnPGConfig"]
