"""The supervised warm start of an RL agent (RL4LMs' supervised + PPO): fine-tune the policy on the task's
demonstrations (:func:`aligngym.agents.sft.supervised_fine_tune`), then make those weights the frozen KL reference.

:class:`WarmStartLMAgent` runs it once, before the first rollout, when the agent's config asks for it (``sft_steps``
> 0); :class:`~aligngym.agents.ppo.PPOAgent` and :class:`~aligngym.agents.grpo.GRPOAgent` build on it.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, TypeVar

from aligngym.agents.lm_agent import LMAgent
from aligngym.agents.sft import supervised_fine_tune

W = TypeVar("W", bound="WarmStartLMAgent")


def warm_start(
    agent: LMAgent, steps: int, learning_rate: float, corpus_demonstrations: int = 0
) -> dict[str, float]:
    """Supervised warm start of an RL agent (RL4LMs' supervised + PPO): fine-tune ``agent.policy`` on the task's
    demonstrations, then make the fine-tuned weights the frozen KL reference (saved with the agent's checkpoints).

    :param agent: an LM agent (PPO, GRPO) before its first update.
    :param steps: SFT optimizer steps.
    :param learning_rate: peak SFT step size.
    :param corpus_demonstrations: Keywords only: also this many CommonGen-style rows from the reference LM's train
        documents (:func:`aligngym.agents.sft.corpus_demonstrations`).
    :returns: the SFT metrics.
    """
    cfg = SimpleNamespace(
        learning_rate=learning_rate,
        seed=agent.config.seed,
        device=agent.device,
        corpus_demonstrations=corpus_demonstrations,
    )
    metrics = supervised_fine_tune(agent.policy, agent.runtime, steps, cfg)
    if agent.reference is not None:
        agent.reference.model.load_state_dict(agent.policy.model.state_dict())
        agent.reference.model.eval()
        agent._reference_is_spec = (
            False  # the reference is no longer the shipped file: save it with the agent
        )
    if agent.optimizer is not None:
        agent.optimizer.state.clear()  # Adam moments of the pre-SFT weights do not apply
    return metrics


class WarmStartLMAgent(LMAgent):
    """An RL :class:`~aligngym.agents.lm_agent.LMAgent` whose :meth:`learn` first runs the supervised warm start
    (:func:`warm_start`) once when its config's ``sft_steps`` > 0 (the config also carries ``sft_learning_rate``
    and ``sft_corpus_demonstrations``); checkpoints record that it ran. :class:`~aligngym.agents.ppo.PPOAgent` and
    :class:`~aligngym.agents.grpo.GRPOAgent` are such agents."""

    sft_done: bool = False

    def learn(self: W, total_timesteps: int, callback: Any = None) -> W:
        """As :meth:`Agent.learn`, after the supervised warm start when ``sft_steps`` > 0 (once per agent)."""
        cfg = self.config
        if cfg.sft_steps > 0 and not self.sft_done:
            metrics = warm_start(self, cfg.sft_steps, cfg.sft_learning_rate, cfg.sft_corpus_demonstrations)
            self.logger.log(self.num_timesteps, **{f"sft/{k}": v for k, v in metrics.items()})
            self.sft_done = True
        return super().learn(total_timesteps, callback)

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "sft_done": self.sft_done}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        super().load_extra_state(extra)
        self.sft_done = bool(extra.get("sft_done", False))
        if self.sft_done:
            self._reference_is_spec = False  # the checkpoint holds the fine-tuned reference (ref.*)


__all__ = ["WarmStartLMAgent", "warm_start"]
