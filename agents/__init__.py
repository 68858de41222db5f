"""aligngym agents: tabular Q-learning, REINFORCE, PPO, GRPO, SFT, reward-guided decoding, reward models, SB3.

Each agent lives in its own module (``aligngym.agents.ppo`` ...); the names below are also importable from here,
loaded on first use so that ``import aligngym.agents`` stays light (no torch import until an agent is asked for).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module under aligngym.agents that defines it
_EXPORTS = {
    "Agent": "base",
    "AgentConfig": "base",
    "CheckpointError": "base",
    "RandomAgent": "base",
    "evaluate": "base",
    "QLearningAgent": "tabular",
    "QLearningConfig": "tabular",
    "ReinforceAgent": "reinforce",
    "ReinforceConfig": "reinforce",
    "PPOAgent": "ppo",
    "PPOConfig": "ppo",
    "GRPOAgent": "grpo",
    "GRPOConfig": "grpo",
    "SFTTrainer": "sft",
    "SFTConfig": "sft",
    "RewardGuidedDecoder": "decoding",
    "DecodingConfig": "decoding",
    "RewardModelTrainer": "reward_modeling",
    "RewardModelConfig": "reward_modeling",
    "GRUPolicy": "gru_policy",
    "CausalLMPolicy": "policies",
    "tiny_causal_lm": "policies",
    "MultiTurnPPOAgent": "multiturn_ppo",
    "MultiTurnPPOConfig": "multiturn_ppo",
    "MultiTurnGRPOAgent": "multiturn_grpo",
    "MultiTurnGRPOConfig": "multiturn_grpo",
    "MultiTurnPG": "multiturn_pg",
    "MultiTurnPGConfig": "multiturn_pg",
    "SelfPlayTrainer": "selfplay",
    "SelfPlayConfig": "selfplay",
    "SB3Agent": "sb3",
    "make_sb3_agent": "sb3",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aligngym.agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"aligngym.agents.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
