"""PPO for causal-LM policies on the multi-turn dialogue envs (``aligngym/Dialogue-*``, ``aligngym/Guess-*``).

Rollouts play one conversation per row of a vector env token by token (:func:`~aligngym.agents.multiturn.
play_conversations`, which checks every observation against the rebuilt history); the update scores each whole
history in one forward pass, checks the recomputed log-probs against the sampling ones, then runs GAE over the
assistant's tokens across turns (token-level credit: user tokens are not steps, gamma counts assistant tokens) with a
per-token KL penalty to a frozen reference, and clipped PPO minibatch epochs. The loop is
:meth:`aligngym.agents.base.Agent.learn`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch

from aligngym.agents.base import AgentConfig
from aligngym.agents.lm_agent import LMAgent, LMAgentConfig
from aligngym.agents.multiturn import (
    Conversation,
    history_forward,
    pack_conversations,
    play_conversations,
    sample_tokens,
    sample_turn,
    turn_position,
)
from aligngym.agents.pg_losses import (
    actor_critic_loss,
    optimizer_step,
)
from aligngym.agents.ppo import AdaptiveKLController, PPOFields, explained_variance, gae, masked_whiten


@dataclasses.dataclass
class MultiTurnPPOConfig(PPOFields, LMAgentConfig, AgentConfig):
    """Hyper-parameters of :class:`MultiTurnPPOAgent` (plus the agent and LM fields).

    :param learning_rate: Adam step size.
    :param num_envs: conversations per update (copies of a single env; a ``VectorEnv`` gives its own number).
    :param n_epochs: passes over each rollout batch.
    :param minibatch_size: conversations per gradient step.
    :param gamma: discount per assistant token.
    :param gae_lambda: GAE lambda.
    :param clip_range: PPO ratio clip.
    :param clip_range_vf: value clip around the old values (0: off).
    :param vf_coef: value-loss weight.
    :param ent_coef: entropy bonus weight.
    :param max_grad_norm: gradient clipping (0: off).
    :param init_kl_coef: initial beta of the per-token KL penalty (0 with ``adaptive_kl=False``: no KL term).
    :param adaptive_kl: adapt beta toward ``target_kl`` (as :class:`~aligngym.agents.ppo.PPOAgent`).
    :param target_kl: target of the mean per-conversation KL (nats, summed over the assistant's tokens).
    :param kl_horizon: horizon (conversations) of the adaptive controller.
    :param whiten_advantages: standardize advantages over the batch.
    :param temperature: sampling temperature (the update scores the same tempered distribution).
    :param check_tolerance: raise when the update's first log-probs differ from the sampling ones by more than this
        (``None``: only log ``charts/logprob_mismatch``).
    """

    check_tolerance: float | None = 1e-3

    def __post_init__(self) -> None:
        self.check_ppo_fields()


class MultiTurnLMAgent(LMAgent):
    """What the multi-turn LM agents share: the env check, acting on dialogue observations, and the rollout."""

    def __init__(self, env: Any, config: Any = None) -> None:
        super().__init__(env, config)
        rt = self.runtime
        if not hasattr(rt, "max_turns"):
            raise TypeError(
                f"{type(self).__name__} trains on multi-turn dialogue envs (aligngym/Dialogue-*, aligngym/Guess-*); "
                "single-turn envs take PPOAgent / GRPOAgent"
            )
        self.sequence_level = "completion_len" in self.signature
        if rt.context_overflow == "truncate":
            raise ValueError(
                f"{type(self).__name__} needs context_overflow='end' or 'error': truncated histories are not exact"
            )

    def _act(self, ids: np.ndarray, mask: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The :data:`~aligngym.agents.multiturn.ActFn` of rollouts: one sampled token per row."""
        return sample_tokens(self.policy, ids, mask, valid, self.config.temperature, self.generator)

    @torch.no_grad()
    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Next token action(s) for dialogue observations (L,) or (B, L) (a whole turn, (T,) or (B, T), on a
        ``-Sequence-v0`` env); sampled unless ``deterministic``."""
        ids, mask, single = self._obs_tensors(obs)
        rt = self.runtime
        ids_np, mask_np = ids.cpu().numpy(), mask.cpu().numpy()
        if self.sequence_level:
            act = self._greedy if deterministic else self._act
            rows = np.ones(len(ids_np), dtype=bool)
            turns = sample_turn(rt, act, ids_np, mask_np, rows, self._idle_action())[0]
            return (turns[0] if single else turns), state
        valid = np.stack(
            [
                rt.action_mask(min(turn_position(i, int(m.sum()), rt.assistant_sep), rt.max_turn_tokens - 1))
                for i, m in zip(ids_np, mask_np)
            ]
        )
        out = (self._greedy if deterministic else self._act)(ids_np, mask_np, valid)[0]
        return (out[0] if single else out), state

    @torch.no_grad()
    def _greedy(self, ids: np.ndarray, mask: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The most likely valid token per row (log-probs are not needed: 0)."""
        logits = self.policy(
            torch.as_tensor(ids, device=self.device), torch.as_tensor(mask, device=self.device)
        )
        logits = logits.float().masked_fill(~torch.as_tensor(valid, device=self.device), float("-inf"))
        return logits.argmax(-1).cpu().numpy().astype(np.int64), np.zeros(len(ids))

    def _idle_action(self) -> int:
        rt = self.runtime
        base = np.flatnonzero(rt.action_mask(1))
        return int(next(a for a in base if rt.token_of(int(a)) != rt.eos_id))

    def _play(self, venv: Any, options: dict[str, Any] | None = None) -> list[Conversation]:
        self.policy.eval()
        return play_conversations(venv, self._act, int(self.rng.integers(2**31 - 1)), options)

    def _pack(self, conversations: list[Conversation]) -> dict[str, Any]:
        batch: dict[str, Any] = pack_conversations(
            conversations, int(self.runtime.tokenizer.pad_id), self.device
        )
        returns = np.array([c.episode_return for c in conversations])
        batch.update(
            conversations=conversations,
            num_steps=int(sum(len(c.actions) for c in conversations)),
            episode_returns=returns,
            episode_scores=np.array([c.score for c in conversations]),
            episode_lengths=np.array([len(c.actions) for c in conversations]),
        )
        return batch

    def _forward(self, model: Any, batch: dict[str, Any], idx: Any, with_values: bool) -> tuple[Any, ...]:
        """(logp, values, entropy) at the assistant's tokens, compact (b, T) in sampling order."""
        logp, values, entropy = history_forward(
            model,
            batch["input_ids"][idx],
            batch["attention_mask"][idx],
            batch["assistant"][idx],
            self.config.temperature,
            batch["valid"][idx],
            with_values=with_values,
        )
        pos = batch["positions"][idx]

        def take(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.gather(1, pos) * batch["token_mask"][idx]

        return take(logp), take(values), take(entropy)

    def _check_logprobs(self, logp: torch.Tensor, batch: dict[str, Any]) -> float:
        """Max |update log-prob - sampling log-prob| over every assistant token; raises over the tolerance."""
        sampled = batch["sampled_logp"].gather(1, batch["positions"]) * batch["token_mask"]
        mismatch = float((logp.detach() - sampled).abs().max())
        tol = self.config.check_tolerance
        if tol is not None and mismatch > tol:
            raise RuntimeError(
                f"update log-probs differ from the sampling log-probs by {mismatch:.2e} (> {tol}): the history "
                "scored is not the one sampled from"
            )
        return mismatch


class MultiTurnPPOAgent(MultiTurnLMAgent):
    """PPO with a causal-LM actor and value head on a multi-turn dialogue token env (see the module docstring).

    ``num_timesteps`` counts the assistant's tokens. Logs CleanRL's keys plus ``charts/kl``, ``charts/kl_coef``,
    ``charts/success`` and ``charts/logprob_mismatch`` (max |update - sampling| log-prob of the batch's tokens).

    :param env: a dialogue env (copied ``num_envs`` times) or a Gymnasium ``VectorEnv`` of them; on ``-Sequence-v0``
        ids the policy samples each turn token by token and the env takes it in one step.
    :param config: :class:`MultiTurnPPOConfig`.
    """

    Config: ClassVar[type[AgentConfig]] = MultiTurnPPOConfig
    algo_name: ClassVar[str] = "multiturn_ppo"
    needs_value = True

    def __init__(self, env: Any, config: MultiTurnPPOConfig | None = None) -> None:
        super().__init__(env, config)
        self.config: MultiTurnPPOConfig
        cfg = self.config
        self.kl_ctl = AdaptiveKLController(cfg.init_kl_coef, cfg.target_kl, cfg.kl_horizon, cfg.adaptive_kl)

    def collect(self, venv: Any) -> dict[str, Any]:
        """One conversation per row of ``venv`` (see :func:`~aligngym.agents.multiturn.play_conversations`)."""
        return self._pack(self._play(venv))

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """KL-penalised token rewards, GAE over the assistant's tokens, ``n_epochs`` of clipped minibatch steps."""
        cfg = self.config
        assert self.reference is not None and self.optimizer is not None
        mask = batch["token_mask"]
        n = mask.shape[0]
        everything = slice(None)
        with torch.no_grad():
            old_logp, old_values, _ = self._forward(self.policy, batch, everything, with_values=True)
            ref_logp, _, _ = self._forward(self.reference, batch, everything, with_values=False)
        mismatch = self._check_logprobs(old_logp, batch)
        kl_tokens = (old_logp - ref_logp) * mask
        beta = self.kl_ctl.value
        rewards = batch["rewards"].gather(1, batch["positions"]) * mask - beta * kl_tokens
        adv, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.gae_lambda)
        if cfg.whiten_advantages:
            adv = masked_whiten(adv, mask)
        stats: dict[str, list[float]] = {
            k: [] for k in ("policy_loss", "value_loss", "approx_kl", "clipfrac", "entropy")
        }
        for _ in range(cfg.n_epochs):
            order = torch.as_tensor(self.rng.permutation(n), device=self.device)
            for start in range(0, n, cfg.minibatch_size):
                idx = order[start : start + cfg.minibatch_size]
                m = mask[idx]
                logp, values, entropy = self._forward(self.policy, batch, idx, with_values=True)
                loss, parts = actor_critic_loss(
                    logp,
                    old_logp[idx],
                    adv[idx],
                    values,
                    old_values[idx],
                    returns[idx],
                    entropy,
                    m,
                    clip_range=cfg.clip_range,
                    clip_range_vf=cfg.clip_range_vf,
                    vf_coef=cfg.vf_coef,
                    ent_coef=cfg.ent_coef,
                )
                optimizer_step(self.optimizer, loss, self.policy.parameters(), cfg.max_grad_norm)
                for key, value in parts.items():
                    stats[key].append(value)
        kl = float(kl_tokens.sum(-1).mean())
        self.kl_ctl.update(kl, n)
        self.num_updates += 1
        out = {f"losses/{k}": float(np.mean(v)) for k, v in stats.items()}
        out["losses/explained_variance"] = explained_variance(old_values, returns, mask)
        out["charts/kl"] = kl
        out["charts/kl_coef"] = beta
        out["charts/logprob_mismatch"] = mismatch
        out["charts/success"] = float(np.mean([c.success for c in batch["conversations"]]))
        return out

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "kl_coef": self.kl_ctl.value}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        super().load_extra_state(extra)
        if "kl_coef" in extra:
            self.kl_ctl.value = float(extra["kl_coef"])


__all__ = ["MultiTurnLMAgent", "MultiTurnPPOAgent", "MultiTurnPPOConfig"]
