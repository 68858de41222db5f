"""Multi-turn policy gradient for causal-LM policies on the dialogue envs, with turn-level credit.

:class:`MultiTurnPG` samples whole conversations token by token from a
:class:`~aligngym.agents.policies.CausalLMPolicy` on a ``-Token-v0`` dialogue env, then scores every sampled token of
every conversation in one forward pass over the exact token history (:func:`~aligngym.agents.multiturn.history_logprobs`)
and takes a REINFORCE step with turn-level returns (:func:`~aligngym.agents.multiturn.turn_level_returns`). The
update's log-probs are checked against the sampling log-probs (``charts/logprob_mismatch``): the history is never
re-tokenized, so they agree to float tolerance.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from aligngym.agents.multiturn import history_from_transcript, history_logprobs, turn_level_returns


@dataclasses.dataclass
class MultiTurnPGConfig:
    """Hyper-parameters of :class:`MultiTurnPG`.

    :param seed: seeds the sampling generator and the env resets.
    :param learning_rate: Adam step size.
    :param episodes_per_update: conversations per gradient step.
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
        self.rng = np.random.default_rng(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
        self.num_updates = 0
        self.history: list[dict[str, float]] = []

    @torch.no_grad()
    def collect(self) -> list[dict[str, Any]]:
        """``episodes_per_update`` conversations: their histories, masks, sampled log-probs and turn rewards."""
        cfg, rt = self.config, self.runtime
        self.policy.eval()
        episodes = []
        for _ in range(cfg.episodes_per_update):
            obs, info = self.env.reset(seed=int(self.rng.integers(2**31 - 1)))
            sampled, masks, turn_rewards, reward_since = [], [], [], 0.0
            done = False
            while not done:
                ids = torch.as_tensor(obs["input_ids"])[None]
                attn = torch.as_tensor(obs["attention_mask"])[None]
                valid = torch.as_tensor(np.asarray(info["action_mask"], dtype=bool))
                logits = self.policy(ids, attn).float()[0] / cfg.temperature
                logp = torch.log_softmax(logits.masked_fill(~valid, torch.finfo(logits.dtype).min), -1)
                action = int(torch.multinomial(logp.exp(), 1, generator=self.generator))
                sampled.append(float(logp[action]))
                masks.append(valid)
                obs, reward, done, _, info = self.env.step(action)
                reward_since += float(reward)
                if "turn_score" in info:  # the turn ended: its reward (and the episode's, at the end)
                    turn_rewards.append(reward_since)
                    reward_since = 0.0
            ids_list, assistant = history_from_transcript(info["transcript"], rt.user_sep, rt.assistant_sep)
            turns = [len(t["ids"]) for t in info["transcript"] if t["role"] == "assistant"]
            episodes.append(
                {
                    "ids": ids_list,
                    "assistant": assistant,
                    "masks": masks,
                    "sampled": sampled,
                    "returns": turn_level_returns(turn_rewards, turns, cfg.gamma),
                    "return": float(sum(turn_rewards)),
                    "score": float(info["score"]),
                }
            )
        return episodes

    def update(self, episodes: list[dict[str, Any]]) -> dict[str, float]:
        """One REINFORCE step: -(G - b) * log pi over every assistant token, log-probs from the exact histories."""
        cfg = self.config
        b, length = len(episodes), max(len(e["ids"]) for e in episodes)
        k = int(episodes[0]["masks"][0].numel())
        ids = torch.full((b, length), int(self.runtime.tokenizer.pad_id), dtype=torch.long)
        attn = torch.zeros((b, length), dtype=torch.long)
        asst = torch.zeros((b, length), dtype=torch.bool)
        valid = torch.ones((b, length, k), dtype=torch.bool)
        returns = torch.zeros((b, length))
        sampled = torch.zeros((b, length))
        for i, e in enumerate(episodes):
            n = len(e["ids"])
            ids[i, :n] = torch.as_tensor(e["ids"])
            attn[i, :n] = 1
            asst[i, :n] = torch.as_tensor(e["assistant"])
            pos = torch.nonzero(asst[i]).squeeze(-1)
            valid[i, pos] = torch.stack(e["masks"])
            returns[i, pos] = torch.as_tensor(e["returns"], dtype=torch.float32)
            sampled[i, pos] = torch.as_tensor(e["sampled"], dtype=torch.float32)
        self.policy.eval()  # no dropout: the update scores the distribution that was sampled
        logp = history_logprobs(self.policy, ids, attn, asst, cfg.temperature, action_masks=valid)
        mismatch = float((logp.detach() - sampled).abs().max())
        if cfg.check_tolerance is not None and mismatch > cfg.check_tolerance:
            raise RuntimeError(
                f"update log-probs differ from the sampling log-probs by {mismatch:.2e} (> {cfg.check_tolerance}): "
                "the history scored is not the one sampled from"
            )
        baseline = float(np.mean([e["return"] for e in episodes]))
        adv = (returns - baseline) * asst
        loss = -(adv * logp).sum() / asst.sum().clamp(min=1)
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
            "charts/score": float(np.mean([e["score"] for e in episodes])),
        }

    def learn(self, n_updates: int) -> MultiTurnPG:
        """Collect and update ``n_updates`` times; metrics go to :attr:`history`."""
        for _ in range(n_updates):
            self.history.append(self.update(self.collect()))
        return self


__all__ = ["MultiTurnPG", "MultiTurnPGConfig"]
