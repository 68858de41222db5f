"""GRPO (group relative policy optimisation, Shao et al. 2024) for causal-LM policies on sequence-level envs.

The policy samples ``num_generations`` completions for each of ``prompts_per_update`` prompts in one KV-cached batch;
a vector env of G copies scores each group (reset with ``options={"prompt_index": i}``), or a native vector env of
all P x G rows scores the whole batch in one step. Advantages are
the group-normalized scores (or RLOO / mean baselines), the loss the clipped surrogate plus beta * KL (k3 estimator)
to a frozen reference; no value model. ``python -m aligngym.agents.grpo --env aligngym/Keywords-Sequence-v0``.
The file reads top to bottom: config, advantages, then the agent's ``collect`` and ``update`` (the loop around them
is :meth:`aligngym.agents.base.Agent.learn`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from aligngym.agents.base import AgentConfig
from aligngym.agents.lm_agent import LMAgentConfig, autocast_context
from aligngym.agents.pg_losses import k3_kl, sequence_mean_step
from aligngym.agents.ppo import batch_overlap, full_kl
from aligngym.agents.vector_envs import autoreset_mode, info_value
from aligngym.agents.warm_start import WarmStartLMAgent

ADVANTAGES = ("group", "rloo", "mean")
#: the values of :attr:`GRPOConfig.kl_estimator`
KL_ESTIMATORS = ("k3", "full")


@dataclasses.dataclass
class GRPOConfig(LMAgentConfig, AgentConfig):
    """Hyper-parameters of :class:`GRPOAgent` (plus the agent and LM fields).

    :param learning_rate: Adam step size.
    :param num_generations: G, completions per prompt (the group); a given ``VectorEnv`` must have G sub-envs.
    :param prompts_per_update: prompts (groups) per update.
    :param n_epochs: passes over each batch (1: on-policy, the ratio is 1 and clipping is inactive).
    :param clip_range: ratio clip epsilon.
    :param beta: weight of the per-token KL to the reference; 0 skips the reference forward.
    :param kl_estimator: ``"k3"`` (exp(d) - d - 1 with d = log ref - log pi of the sampled token: unbiased,
        non-negative; the GRPO paper's) or ``"full"`` (the exact KL of the whole next-token distribution at each
        state, summed over the vocabulary, as :class:`~aligngym.agents.ppo.PPOAgent`'s ``kl_penalty="loss"``).
    :param advantage: ``"group"`` ((r - mean_g) / (std_g + eps), GRPO), ``"rloo"`` (r - mean of the other G-1:
        REINFORCE leave-one-out) or ``"mean"`` (r - mean_g: REINFORCE with a group-mean baseline).
    :param novelty_coef: weight of the batch novelty penalty against cross-prompt mode collapse: each completion's
        reward is lowered by ``novelty_coef`` x :func:`aligngym.agents.ppo.batch_overlap` (the largest share of its
        bigrams found in one completion of another prompt in the same batch) before the group advantages; the env's
        score is unchanged; 0: off.
    :param max_grad_norm: gradient clipping (0: off).
    :param temperature: sampling temperature of the completions (log-probs are of the tempered policy).
    :param top_k: top-k filtering of the completions (0: off).
    :param top_p: nucleus filtering of the completions (1: off).
    :param sft_steps: supervised warm start before the first update (SFT on the task's demonstrations, then the
        fine-tuned weights are the KL reference; 0: off).
    :param sft_learning_rate: peak step size of the warm start.
    :param sft_corpus_demonstrations: Keywords only: the warm start also fine-tunes on this many CommonGen-style rows
        from the reference LM's train documents (:func:`aligngym.agents.sft.corpus_demonstrations`).
    """

    learning_rate: float = 2e-4
    num_generations: int = 8
    prompts_per_update: int = 4
    n_epochs: int = 1
    clip_range: float = 0.2
    beta: float = 0.04
    kl_estimator: str = "k3"
    advantage: str = "group"
    novelty_coef: float = 0.0
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
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
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {ADVANTAGES}, got {self.advantage!r}")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (a group needs a baseline), got {self.num_generations}"
            )
        for name in ("prompts_per_update", "n_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.novelty_coef < 0:
            raise ValueError(f"novelty_coef must be >= 0, got {self.novelty_coef}")
        if self.beta < 0 or self.learning_rate <= 0:
            raise ValueError(
                f"beta must be >= 0 and learning_rate > 0, got {self.beta}, {self.learning_rate}"
            )


def group_advantages(scores: torch.Tensor, kind: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """Advantages of grouped rewards float (n_groups, G) -> (n_groups, G).

    ``group``: (r - mean) / (std + eps); ``rloo``: r - mean of the other G-1; ``mean``: r - mean.
    """
    mean = scores.mean(-1, keepdim=True)
    if kind == "group":
        return (scores - mean) / (scores.std(-1, keepdim=True) + eps)
    if kind == "rloo":
        g = scores.shape[-1]
        return (scores - mean) * g / (g - 1)
    if kind == "mean":
        return scores - mean
    raise ValueError(f"unknown advantage {kind!r}; expected one of {ADVANTAGES}")


class GRPOAgent(WarmStartLMAgent):
    """GRPO with a causal-LM policy on a ``-Sequence-v0`` env; no value model (see the module docstring).

    ``num_timesteps`` counts completions (sequence-env steps). ``predict`` samples (or greedily decodes) a whole
    completion for each observation, as the env's ``MultiDiscrete`` action.

    :param env: a sequence-level aligngym env (copied ``num_generations`` times into a ``SyncVectorEnv``), a
        Gymnasium ``VectorEnv`` of ``num_generations`` of them, or aligngym's native vector env of
        ``prompts_per_update * num_generations`` rows (one step per update).
    """

    Config: ClassVar[type[AgentConfig]] = GRPOConfig
    algo_name: ClassVar[str] = "grpo"

    def __init__(self, env: Any, config: GRPOConfig | None = None) -> None:
        from aligngym.agents.multiturn import require_single_turn

        require_single_turn(env, "GRPOAgent", "MultiTurnGRPOAgent")
        super().__init__(env, config)
        self.config: GRPOConfig
        if "completion_len" not in self.signature:
            raise TypeError(
                "GRPOAgent needs a sequence-level env (MultiDiscrete actions): use aligngym/<Task>-Sequence-v0"
            )
        if self.config.beta == 0:
            self.reference = None  # no KL term: no reference forward (and nothing extra to save)
        g, n = self.config.num_generations, self.config.prompts_per_update
        if isinstance(env, gym.vector.VectorEnv) and env.num_envs not in (g, n * g):
            raise ValueError(
                f"GRPOAgent needs a vector env of num_generations={g} sub-envs (one group per reset) or of "
                f"prompts_per_update x num_generations={n * g} (the whole batch in one step), got {env.num_envs}"
            )
        self.pad_action = self.eos_action if self.eos_action is not None else 0

    # -- acting ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, greedy: bool = False) -> Any:
        cfg = self.config
        with autocast_context(self.device, cfg.mixed_precision):
            return self.policy.sample(
                prompt_ids,
                prompt_mask,
                self.runtime.max_new_tokens,
                temperature=cfg.temperature,
                top_k=cfg.top_k,
                top_p=cfg.top_p,
                greedy=greedy,
                eos_action=self.eos_action,
                pad_action=self.pad_action,
                action_masks=self.step_masks,
                generator=self.generator,
            )

    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Whole completions (int64 (T,) or (B, T) action indices) for sequence-env observations."""
        ids, mask, single = self._obs_tensors(obs)
        prompt_ids, prompt_mask = self._prompt_part(ids, mask)
        out = self._generate(prompt_ids, prompt_mask, greedy=deterministic)
        actions = out.actions.cpu().numpy().astype(np.int64)
        return (actions[0] if single else actions), state

    # -- rollouts --------------------------------------------------------------------------------------------------
    def rollout_envs(self) -> int:
        """A group per reset: ``num_generations`` copies of a single env."""
        return self.config.num_generations

    def collect(self, venv: Any) -> dict[str, Any]:
        """``prompts_per_update`` groups of G completions, sampled in one batch and scored by the env.

        The policy samples all n x G completions at once (KV-cached, one forward per token for the whole batch); the
        env scores them in one step when it is aligngym's native vector env of n x G rows (reset with each row's
        ``prompt_index``), else one reset and step per group of G.

        :returns: ``prompt_ids``/``prompt_mask`` (n*G, P), ``actions``/``mask`` (n*G, T) tensors, ``scores`` and
            ``rewards`` float32 (n, G) numpy arrays, ``completions`` (texts), and the loop's ``num_steps``
            (completions), ``episode_returns``, ``episode_scores``, ``episode_lengths``.
        """
        cfg, rt = self.config, self.runtime
        mode = autoreset_mode(venv)
        g, n = cfg.num_generations, cfg.prompts_per_update
        prompt_idx = self.rng.integers(len(rt.rows), size=n)
        # one batched sample of all n x G completions (rows grouped by prompt, laid out as the env's observations)
        starts = [rt.empty_obs(rt.prompt_ids[int(i)]) for i in prompt_idx for _ in range(g)]
        ids, mask, _ = self._obs_tensors(
            {
                "input_ids": np.stack([s[0] for s in starts]),
                "attention_mask": np.stack([s[1] for s in starts]),
            }
        )
        ids, mask = self._prompt_part(ids, mask)
        out = self._generate(ids, mask)
        actions = out.actions.cpu().numpy()
        # scored by the env: one step for all rows (a vector env of n x G) or one step per group (G rows)
        one_step = n > 1 and venv.num_envs == n * g  # a native vector env of every row: per-row prompt_index
        groups = [np.arange(n * g)] if one_step else [np.arange(j * g, (j + 1) * g) for j in range(n)]
        rewards_flat = np.zeros(n * g, dtype=np.float32)
        scores_flat = np.zeros(n * g, dtype=np.float32)
        completions: list[str] = []
        for rows in groups:
            index = [int(prompt_idx[r // g]) for r in rows] if one_step else int(prompt_idx[rows[0] // g])
            venv.reset(options={"prompt_index": index})
            _, r, _, _, info = venv.step(actions[rows])
            rewards_flat[rows] = np.asarray(r, dtype=np.float32)
            for k, row in enumerate(rows.tolist()):
                s = info_value(info, "score", k, mode)
                scores_flat[row] = float(s) if s is not None else rewards_flat[row]
                c = info_value(info, "completion", k, mode)
                completions.append(str(c) if c is not None else "")
        scores, rewards = scores_flat.reshape(n, g), rewards_flat.reshape(n, g)
        batch: dict[str, Any] = {
            "prompt_ids": ids,
            "prompt_mask": mask,
            "actions": out.actions,
            "mask": out.mask,
        }
        batch.update(scores=scores, rewards=rewards, completions=completions)
        batch.update(
            num_steps=scores.size,
            episode_returns=rewards.reshape(-1),
            episode_scores=scores.reshape(-1),
            episode_lengths=batch["mask"].sum(-1).cpu().numpy(),
        )
        return batch

    # -- the update ------------------------------------------------------------------------------------------------
    def _logprobs(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        return model.completion_logprobs(
            batch["prompt_ids"],
            batch["prompt_mask"],
            batch["actions"],
            batch["mask"],
            action_masks=self.step_masks,
            temperature=self.config.temperature,
            with_entropy=False,  # GRPO's loss has no entropy term
        )[0]

    def _log_dist(self, model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs (B, T), 0 where the mask is 0, and the whole log-distribution (B, T, n_actions),
        with the masking and temperature of :meth:`_logprobs`."""
        logits, _ = model.completion_logits(
            batch["prompt_ids"], batch["prompt_mask"], batch["actions"], batch["mask"]
        )
        if self.config.temperature != 1.0:
            logits = logits / self.config.temperature
        valid = self.step_masks[: batch["actions"].shape[1]].bool()
        log_dist = torch.log_softmax(logits.masked_fill(~valid, torch.finfo(logits.dtype).min), dim=-1)
        logp = log_dist.gather(-1, batch["actions"].long().unsqueeze(-1)).squeeze(-1)
        return logp * batch["mask"].to(logp.dtype), log_dist

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """Group-normalized advantages, then ``n_epochs`` steps on the clipped surrogate + beta * KL."""
        cfg = self.config
        assert self.optimizer is not None
        amp = autocast_context(self.device, cfg.mixed_precision)
        mask = batch["mask"].float()
        rewards = torch.as_tensor(batch["rewards"], device=self.device)
        overlap = None
        if cfg.novelty_coef > 0:
            overlap = batch_overlap(
                batch["actions"], batch["mask"], batch["prompt_ids"], batch["prompt_mask"], self.eos_action
            )
            penalty = torch.as_tensor(cfg.novelty_coef * overlap, dtype=rewards.dtype, device=self.device)
            rewards = rewards - penalty.reshape(rewards.shape)
        adv = group_advantages(rewards, cfg.advantage).reshape(-1, 1)
        lengths = mask.sum(-1).clamp(min=1.0)
        full = cfg.kl_estimator == "full"
        ref_dist = None
        with torch.no_grad(), amp:
            # one epoch is on-policy: the old log-probs are the current ones (detached below), no extra forward
            old_logp = self._logprobs(self.policy, batch) if cfg.n_epochs > 1 else None
            ref_logp = None
            if self.reference is not None:
                if full:
                    ref_logp, ref_dist = self._log_dist(self.reference, batch)
                else:
                    ref_logp = self._logprobs(self.reference, batch)
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "approx_kl", "clipfrac", "kl")}
        for _ in range(cfg.n_epochs):
            with amp:
                if full:
                    logp, dist = self._log_dist(self.policy, batch)
                else:
                    logp, dist = self._logprobs(self.policy, batch), None
            old = logp.detach() if old_logp is None else old_logp
            kl: torch.Tensor | None = None
            if ref_dist is not None and dist is not None:
                kl = full_kl(dist, ref_dist) * mask  # exact KL(pi || ref) of each next-token distribution
            elif ref_logp is not None:
                kl = k3_kl(logp, ref_logp, mask)
            sequence_mean_step(
                self.optimizer,
                self.policy.parameters(),
                logp,
                old,
                adv,
                mask,
                lengths,
                kl,
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
            "charts/reward_std": float(batch["rewards"].std(-1).mean()),
            **({"charts/batch_overlap": float(overlap.mean())} if overlap is not None else {}),
        }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train GRPO from the shipped reference model and compare it with the untrained model on the test prompts."""
    from aligngym.agents.cli import agent_parser, train_and_compare

    parser = agent_parser(__doc__.splitlines()[0], "aligngym/Keywords-Sequence-v0", 2000, "completions")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--prompts-per-update", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--advantage", choices=ADVANTAGES, default="group")
    parser.add_argument("--policy", default=None, help="local model directory, or 'tiny-random'")
    args = parser.parse_args(argv)
    cfg = GRPOConfig(
        seed=args.seed,
        device=args.device,
        num_generations=args.num_generations,
        prompts_per_update=args.prompts_per_update,
        learning_rate=args.learning_rate,
        beta=args.beta,
        advantage=args.advantage,
        log_dir=args.log_dir,
        policy=args.policy,
    )
    return train_and_compare(GRPOAgent, cfg, args, baseline="before")


if __name__ == "__main__":
    main()
