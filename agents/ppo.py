"""PPO for causal-LM policies on token-level envs (RLHF-style: Ziegler et al. 2019, TRL's PPO).

Rollouts run through the Gymnasium vector-env API with the policy's KV cache (one token per env step for every row);
the reward of each token is the env's reward minus beta * (log pi - log pi_ref) from a frozen reference, with
beta adapted toward a target KL. GAE on the value head that shares the LM trunk, clipped policy and value losses,
minibatch epochs, gradient clipping, bfloat16 autocast on CUDA. ``python -m aligngym.agents.ppo --steps 20000``.
The file reads top to bottom: config, KL controller and GAE, then the agent's ``collect`` and ``update`` (the
loop around them is :meth:`aligngym.agents.base.Agent.learn`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch

from aligngym.agents.base import AgentConfig
from aligngym.agents.lm_agent import LMAgentConfig, autocast_context
from aligngym.agents.pg_losses import (
    actor_critic_loss,
    masked_mean,
    optimizer_step,
)
from aligngym.agents.sampling import process_logits, sample_actions
from aligngym.agents.vector_envs import autoreset_mode, info_value
from aligngym.agents.warm_start import WarmStartLMAgent

#: the values of :attr:`PPOConfig.kl_penalty`
KL_PENALTIES = ("reward", "full", "loss")


@dataclasses.dataclass
class PPOFields:
    """The PPO optimisation and KL-control fields that :class:`PPOConfig` and
    :class:`~aligngym.agents.multiturn_ppo.MultiTurnPPOConfig` share (each documents them), with their checks."""

    learning_rate: float = 1e-4
    num_envs: int = 16
    n_epochs: int = 4
    minibatch_size: int = 8
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    clip_range_vf: float = 0.2
    vf_coef: float = 0.1
    ent_coef: float = 0.0
    max_grad_norm: float = 1.0
    init_kl_coef: float = 0.05
    adaptive_kl: bool = True
    target_kl: float = 2.0
    kl_horizon: int = 2000
    whiten_advantages: bool = True
    temperature: float = 1.0

    def check_ppo_fields(self) -> None:
        """Raise ``ValueError`` naming the first shared field out of its range."""
        for name in ("num_envs", "n_epochs", "minibatch_size", "kl_horizon"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.temperature <= 0:
            raise ValueError(
                f"learning_rate and temperature must be positive, got {self.learning_rate}, {self.temperature}"
            )
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gamma and gae_lambda must be in [0, 1], got {self.gamma}, {self.gae_lambda}")
        if self.init_kl_coef < 0 or self.target_kl <= 0:
            raise ValueError(
                f"init_kl_coef must be >= 0 and target_kl > 0, got {self.init_kl_coef}, {self.target_kl}"
            )


@dataclasses.dataclass
class PPOConfig(PPOFields, LMAgentConfig, AgentConfig):
    """Hyper-parameters of :class:`PPOAgent` (plus :class:`~aligngym.agents.base.AgentConfig`'s and the LM fields
    ``policy``, ``reference``, ``mixed_precision`` of :class:`~aligngym.agents.lm_agent.LMAgentConfig`).

    :param learning_rate: Adam step size.
    :param num_envs: copies of a single env run side by side (ignored for a ``VectorEnv``): episodes per update.
    :param n_epochs: passes over each rollout batch.
    :param minibatch_size: episodes per gradient step.
    :param gamma: discount.
    :param gae_lambda: GAE lambda.
    :param clip_range: PPO ratio clip.
    :param clip_range_vf: value clip around the old values (0: off).
    :param vf_coef: value-loss weight.
    :param ent_coef: entropy bonus weight.
    :param max_grad_norm: gradient clipping (0: off).
    :param init_kl_coef: initial beta of the per-token KL penalty.
    :param adaptive_kl: adapt beta toward ``target_kl`` (Ziegler et al.: beta *= 1 + clip(KL/target - 1, +-0.2) * n/horizon).
    :param target_kl: target of the mean per-episode KL (nats, summed over tokens).
    :param kl_horizon: horizon (episodes) of the adaptive controller.
    :param kl_penalty: how beta * KL(pi || ref) enters the objective: ``"reward"`` (Ziegler et al., TRL: each
        token's reward less beta * (log pi - log ref) of the sampled token), ``"full"`` (each token's reward less
        beta * the exact KL of the whole next-token distribution at that state, summed over the vocabulary: the
        same expectation with no sampling noise) or ``"loss"`` (the score alone is the reward, and beta * the
        exact per-state KL of the current policy, averaged over the completion tokens, is added to the loss and
        differentiated, as in GRPO: every visited state is pulled toward the reference, also where the reward does
        not care).
    :param novelty_coef: weight of a batch novelty penalty against cross-prompt mode collapse: each episode's last
        reward is lowered by ``novelty_coef`` x :func:`batch_overlap` (the largest share of its completion's bigrams
        found in one completion of another prompt in the same rollout batch; 1 for a sentence repeated verbatim
        after another prompt). The env's score is unchanged (logs and evaluation see the score); 0: off.
    :param whiten_advantages: standardize advantages over the batch.
    :param temperature: sampling temperature of the rollouts (log-probs are of the tempered policy).
    :param sft_steps: supervised warm start before the first rollout (RL4LMs' supervised + PPO): this many SFT steps
        on the task's demonstrations (:func:`aligngym.agents.sft.demonstrations`), after which the fine-tuned
        weights are the KL reference (0: off).
    :param sft_learning_rate: peak step size of the warm start.
    :param sft_corpus_demonstrations: Keywords only: the warm start also fine-tunes on this many CommonGen-style rows
        from the reference LM's train documents (:func:`aligngym.agents.sft.corpus_demonstrations`).
    """

    kl_penalty: str = "reward"
    novelty_coef: float = 0.0
    sft_steps: int = 0
    sft_learning_rate: float = 3e-4
    sft_corpus_demonstrations: int = 0

    def __post_init__(self) -> None:
        if self.sft_steps < 0 or self.sft_learning_rate <= 0:
            raise ValueError(
                f"sft_steps must be >= 0 and sft_learning_rate > 0, got {self.sft_steps}, {self.sft_learning_rate}"
            )
        if self.sft_corpus_demonstrations < 0:
            raise ValueError(f"sft_corpus_demonstrations must be >= 0, got {self.sft_corpus_demonstrations}")
        self.check_ppo_fields()
        if self.novelty_coef < 0:
            raise ValueError(f"novelty_coef must be >= 0, got {self.novelty_coef}")
        if self.kl_penalty not in KL_PENALTIES:
            raise ValueError(f"kl_penalty must be one of {KL_PENALTIES}, got {self.kl_penalty!r}")


class AdaptiveKLController:
    """beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_episodes / horizon) (Ziegler et al. 2019)."""

    def __init__(self, init: float, target: float, horizon: int, adaptive: bool = True) -> None:
        self.value, self.target, self.horizon, self.adaptive = (
            float(init),
            float(target),
            int(horizon),
            adaptive,
        )

    def update(self, kl: float, n_episodes: int) -> float:
        if self.adaptive:
            error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
            self.value *= 1.0 + error * n_episodes / self.horizon
        return self.value


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates for right-padded episodes that end (terminate) at their last token.

    :param rewards: float (B, T), the reward of each token.
    :param values: float (B, T), the value of the state before each token.
    :param mask: (B, T), 1 on the episode's tokens.
    :param gamma: discount.
    :param lam: GAE lambda.
    :returns: advantages and returns (advantages + values), float (B, T), 0 after each episode.
    """
    b, t_max = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(b, device=rewards.device, dtype=rewards.dtype)
    m = mask.to(rewards.dtype)
    for t in reversed(range(t_max)):
        nxt = m[:, t + 1] if t + 1 < t_max else torch.zeros_like(last)
        next_value = values[:, t + 1] * nxt if t + 1 < t_max else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * nxt * last) * m[:, t]
        adv[:, t] = last
    return adv, (adv + values) * m


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` standardised over the masked positions (0 elsewhere)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask.to(x.dtype)


def full_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of each next-token distribution, summed over the last axis, from log-probabilities.

    Actions outside the valid set have (nearly) zero probability under both and add nothing.

    :param log_p: float (..., V) log-probabilities of the policy.
    :param log_q: float (..., V) log-probabilities of the reference, same shape.
    :returns: float (...), >= 0.
    """
    if log_p.shape != log_q.shape:
        raise ValueError(
            f"log_p and log_q must have the same shape, got {tuple(log_p.shape)} and {tuple(log_q.shape)}"
        )
    return (log_p.exp() * (log_p - log_q)).sum(-1).clamp(min=0.0)


def batch_overlap(
    actions: torch.Tensor,
    mask: torch.Tensor,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    eos_action: int | None,
) -> np.ndarray:
    """For each completion, the largest share of its bigrams that one completion of another prompt also contains.

    Completions are the masked actions without EOS; one with a single token is compared by its unigram, an empty
    one scores 0. Rows with the same prompt (same ids under the same mask) are not compared with each other: a
    prompt may have one good answer, a sentence reused after every prompt is the collapse this measures.

    :param actions: (B, T) action ids.
    :param mask: (B, T), 1 on each completion's tokens.
    :param prompt_ids: (B, P) prompt ids.
    :param prompt_mask: (B, P) prompt attention mask.
    :param eos_action: the EOS action (dropped), or ``None``.
    :returns: float (B,) in [0, 1].
    """
    acts, m = actions.cpu().numpy(), mask.cpu().numpy().astype(bool)
    pids = (prompt_ids * prompt_mask).cpu().numpy()
    prompts = [p.tobytes() for p in pids]
    grams: list[set[tuple[int, ...]]] = []
    for row, keep in zip(acts, m):
        toks = [int(a) for a in row[keep] if eos_action is None or int(a) != eos_action]
        n = 2 if len(toks) >= 2 else 1
        grams.append({tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)})
    out = np.zeros(len(grams))
    for i, gi in enumerate(grams):
        if not gi:
            continue
        best = max(
            (len(gi & gj) for j, gj in enumerate(grams) if j != i and prompts[j] != prompts[i]), default=0
        )
        out[i] = best / len(gi)
    return out


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[returns - values] / Var[returns] over the masked tokens (CleanRL's ``losses/explained_variance``);
    NaN when the returns do not vary."""
    m = mask.bool()
    y, v = returns[m].float(), values[m].float()
    var_y = float(y.var(unbiased=False)) if y.numel() else 0.0
    return float("nan") if var_y == 0.0 else 1.0 - float((y - v).var(unbiased=False)) / var_y


class PPOAgent(WarmStartLMAgent):
    """PPO with a causal-LM actor, a value head on the same trunk, and adaptive KL to a frozen reference.

    ``learn(total_timesteps)`` repeats: reset the vector env (seeded from the agent's generator), generate one episode
    per row with the KV cache while stepping the env, score log-probs / values / reference log-probs in one forward
    pass each, then ``n_epochs`` of minibatch PPO updates. ``num_timesteps`` counts generated tokens (env steps that
    are learned from); the last update may run past the budget by one batch. Logs CleanRL's keys
    (``charts/episodic_return``, ``charts/SPS``, ``losses/policy_loss``, ``losses/value_loss``, ``losses/entropy``,
    ``losses/approx_kl``, ``losses/clipfrac``, ``losses/explained_variance``) plus ``charts/score``, ``charts/kl``
    (KL(pi || ref) summed over an episode's tokens, batch mean), ``charts/kl_coef`` and ``charts/non_score_reward``.

    On CPU a run resumed from a checkpoint (``checkpoint_every`` / ``checkpoint_dir``, then :meth:`load` and
    ``learn`` of the remaining steps) repeats an uninterrupted run exactly.

    :param env: a token-level aligngym env or a Gymnasium ``VectorEnv`` of them (NEXT_STEP, SAME_STEP, DISABLED
        autoreset, or a mode in which finished rows idle until the batch is done).
    """

    Config: ClassVar[type[AgentConfig]] = PPOConfig
    algo_name: ClassVar[str] = "ppo"
    needs_value = True

    def __init__(self, env: Any, config: PPOConfig | None = None) -> None:
        from aligngym.agents.multiturn import require_single_turn

        require_single_turn(env, "PPOAgent", "MultiTurnPPOAgent")
        super().__init__(env, config)
        self.config: PPOConfig
        if "completion_len" in self.signature or "n_actions" not in self.signature:
            raise TypeError(
                "PPOAgent needs a token-level env (Discrete actions); use GRPOAgent for -Sequence-v0 envs"
            )
        cfg = self.config
        self.kl_ctl = AdaptiveKLController(cfg.init_kl_coef, cfg.target_kl, cfg.kl_horizon, cfg.adaptive_kl)
        valid = self.step_masks[-1].cpu().numpy()
        non_eos = [a for a in np.flatnonzero(valid) if a != self.eos_action]
        self._idle_action = int(non_eos[0]) if non_eos else 0  # given to rows whose episode is over

    # -- acting ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Next action(s) for token-env observations (L,) or (B, L); sampled unless ``deterministic``."""
        ids, mask, single = self._obs_tensors(obs)
        with autocast_context(self.device, self.config.mixed_precision):
            logits = self.policy(ids, mask).float()
        done = (mask[:, self.runtime.max_prompt_tokens :].sum(-1)).clamp(max=self.runtime.max_new_tokens - 1)
        logits = logits.masked_fill(~self.step_masks[done], float("-inf"))
        actions = sample_actions(
            process_logits(logits, self.config.temperature), self.generator, deterministic
        )
        out = actions.cpu().numpy().astype(np.int64)
        return (out[0] if single else out), state

    # -- rollouts --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self, venv: Any) -> dict[str, Any]:
        """One episode per row of ``venv``, generated with the KV cache while stepping the env.

        :returns: ``prompt_ids``/``prompt_mask`` (B, P), ``actions``/``mask``/``rewards`` (B, T) tensors on the
            agent's device, ``scores`` and ``returns`` numpy (B,), and the loop's ``num_steps`` (tokens),
            ``episode_returns``, ``episode_scores``, ``episode_lengths``.
        """
        cfg, rt = self.config, self.runtime
        mode = autoreset_mode(venv)
        n, p, t_max = venv.num_envs, rt.max_prompt_tokens, rt.max_new_tokens
        obs, _ = venv.reset(seed=int(self.rng.integers(2**31 - 1)))
        ids = torch.as_tensor(np.asarray(obs["input_ids"])[:, :p], device=self.device)
        pmask = torch.as_tensor(np.asarray(obs["attention_mask"])[:, :p], device=self.device)
        actions = torch.full((n, t_max), self._idle_action, dtype=torch.long, device=self.device)
        mask = torch.zeros((n, t_max), dtype=torch.long, device=self.device)
        rewards = torch.zeros((n, t_max), device=self.device)
        alive = np.ones(n, dtype=bool)
        scores = np.zeros(n)
        returns = np.zeros(n)
        with autocast_context(self.device, cfg.mixed_precision):
            state = self.policy.begin(ids, pmask)
            for t in range(t_max):
                logits = state.logits.float().masked_fill(~self.step_masks[t], float("-inf"))
                a = sample_actions(process_logits(logits, cfg.temperature), self.generator)
                alive_t = torch.as_tensor(alive, device=self.device)
                a = torch.where(alive_t, a, torch.full_like(a, self._idle_action))
                _, r, terminated, truncated, info = venv.step(a.cpu().numpy())
                ended = (np.asarray(terminated) | np.asarray(truncated)) & alive
                actions[:, t] = a
                mask[:, t] = alive_t.long()
                rewards[:, t] = torch.as_tensor(
                    np.where(alive, r, 0.0), dtype=torch.float32, device=self.device
                )
                returns += np.where(alive, r, 0.0)
                for i in np.flatnonzero(ended):
                    s = info_value(info, "score", int(i), mode)
                    scores[i] = float(s) if s is not None else returns[i]
                if t + 1 == t_max and (alive & ~ended).any():
                    raise RuntimeError(
                        f"{int((alive & ~ended).sum())} episodes did not end after max_new_tokens={t_max} steps"
                    )
                alive &= ~ended
                if not alive.any():
                    break
                if mode == "Disabled" and ended.any():
                    venv.reset(options={"reset_mask": ended})  # finished rows idle in fresh episodes
                state = self.policy.extend(state, a, torch.as_tensor(alive, device=self.device))
        lengths = mask.sum(-1)
        return {
            "prompt_ids": ids,
            "prompt_mask": pmask,
            "actions": actions,
            "mask": mask,
            "rewards": rewards,
            "scores": scores,
            "returns": returns,
            "num_steps": int(lengths.sum()),
            "episode_returns": returns,
            "episode_scores": scores,
            "episode_lengths": lengths.cpu().numpy(),
        }

    # -- the update ------------------------------------------------------------------------------------------------
    def _logprobs(
        self, model: Any, batch: dict[str, Any], idx: Any, with_values: bool
    ) -> tuple[torch.Tensor, ...]:
        return model.completion_logprobs(
            batch["prompt_ids"][idx],
            batch["prompt_mask"][idx],
            batch["actions"][idx],
            batch["mask"][idx],
            action_masks=self.step_masks[: batch["actions"].shape[1]],
            temperature=self.config.temperature,
            with_values=with_values,
        )

    def _distributions(
        self, model: Any, batch: dict[str, Any], idx: Any, with_values: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """As :meth:`_logprobs` (same masking and temperature), plus the whole next-token log-distribution.

        :returns: ``(logprobs (B, T), values (B, T) or None, entropy (B, T), log_dist (B, T, n_actions))``; the
            first three are 0 where the mask is 0, ``log_dist`` is not masked.
        """
        actions, m = batch["actions"][idx], batch["mask"][idx]
        logits, values = model.completion_logits(
            batch["prompt_ids"][idx], batch["prompt_mask"][idx], actions, m, with_values
        )
        if self.config.temperature != 1.0:
            logits = logits / self.config.temperature
        valid = self.step_masks[: actions.shape[1]].bool()
        log_dist = torch.log_softmax(logits.masked_fill(~valid, torch.finfo(logits.dtype).min), dim=-1)
        logp = log_dist.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(log_dist.exp() * log_dist).sum(-1)
        mf = m.to(logp.dtype)
        return logp * mf, (values * mf if values is not None else None), entropy * mf, log_dist

    def _forward(
        self, model: Any, batch: dict[str, Any], idx: Any, with_values: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """Log-probs, values, entropy, and the log-distribution when the KL penalty needs it (else ``None``)."""
        if self.config.kl_penalty == "reward":
            logp, values, entropy = self._logprobs(model, batch, idx, with_values)
            return logp, values, entropy, None
        return self._distributions(model, batch, idx, with_values)

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """KL-penalised rewards, GAE, and ``n_epochs`` of clipped PPO minibatch steps on one rollout batch."""
        cfg = self.config
        mask = batch["mask"]
        n = mask.shape[0]
        everything = slice(None)
        amp = autocast_context(self.device, cfg.mixed_precision)
        assert self.reference is not None and self.optimizer is not None
        with torch.no_grad(), amp:
            old_logp, old_values, _, old_dist = self._forward(
                self.policy, batch, everything, with_values=True
            )
            ref_logp, _, _, ref_dist = self._forward(self.reference, batch, everything, with_values=False)
        assert old_values is not None
        kl_tokens = (old_logp - ref_logp) * mask  # the sampled estimate: what the controller and the logs see
        beta = self.kl_ctl.value
        if cfg.kl_penalty == "reward":
            rewards = batch["rewards"] - beta * kl_tokens
        elif cfg.kl_penalty == "full":
            assert old_dist is not None and ref_dist is not None
            rewards = batch["rewards"] - beta * full_kl(old_dist, ref_dist) * mask
        else:
            rewards = batch["rewards"]
        overlap = None
        if cfg.novelty_coef > 0:
            overlap = batch_overlap(
                batch["actions"], mask, batch["prompt_ids"], batch["prompt_mask"], self.eos_action
            )
            last = (mask.sum(-1) - 1).clamp(min=0)
            bonus = torch.zeros_like(rewards)
            bonus[torch.arange(n, device=self.device), last] = torch.as_tensor(
                -cfg.novelty_coef * overlap, dtype=rewards.dtype, device=self.device
            )
            rewards = rewards + bonus * mask
        adv, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.gae_lambda)
        if cfg.whiten_advantages:
            adv = masked_whiten(adv, mask)
        stats: dict[str, list[float]] = {
            k: [] for k in ("policy_loss", "value_loss", "approx_kl", "clipfrac", "entropy", "kl_loss")
        }
        for _ in range(cfg.n_epochs):
            order = torch.as_tensor(self.rng.permutation(n), device=self.device)
            for start in range(0, n, cfg.minibatch_size):
                idx = order[start : start + cfg.minibatch_size]
                m = mask[idx]
                with amp:
                    logp, values, entropy, dist = self._forward(self.policy, batch, idx, with_values=True)
                assert values is not None
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
                if cfg.kl_penalty == "loss":
                    assert dist is not None and ref_dist is not None
                    kl_loss = masked_mean(full_kl(dist, ref_dist[idx]), m)
                    loss = loss + beta * kl_loss
                    stats["kl_loss"].append(float(kl_loss.detach()))
                optimizer_step(self.optimizer, loss, self.policy.parameters(), cfg.max_grad_norm)
                for key, value in parts.items():
                    stats[key].append(value)
        kl = float(kl_tokens.sum(-1).mean())
        self.kl_ctl.update(kl, n)
        self.num_updates += 1
        out = {f"losses/{k}": float(np.mean(v)) for k, v in stats.items() if v}
        out["losses/explained_variance"] = explained_variance(old_values, returns, mask)
        out["charts/kl"] = kl
        out["charts/kl_coef"] = beta
        out["charts/non_score_reward"] = float((-beta * kl_tokens).sum(-1).mean())
        if overlap is not None:
            out["charts/batch_overlap"] = float(overlap.mean())
        return out

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "kl_coef": self.kl_ctl.value}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        super().load_extra_state(extra)
        if "kl_coef" in extra:
            self.kl_ctl.value = float(extra["kl_coef"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train PPO from the shipped reference model and compare it with the untrained model on the test prompts."""
    from aligngym.agents.cli import agent_parser, train_and_compare

    parser = agent_parser(
        __doc__.splitlines()[0], "aligngym/Sentiment-Token-v0", 20_000, "tokens to learn from"
    )
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--target-kl", type=float, default=2.0)
    parser.add_argument("--policy", default=None, help="local model directory, or 'tiny-random'")
    args = parser.parse_args(argv)
    cfg = PPOConfig(
        seed=args.seed,
        device=args.device,
        num_envs=args.num_envs,
        learning_rate=args.learning_rate,
        target_kl=args.target_kl,
        log_dir=args.log_dir,
        policy=args.policy,
    )
    return train_and_compare(PPOAgent, cfg, args, baseline="before")


if __name__ == "__main__":
    main()
