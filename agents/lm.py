"""Deprecated home of the causal-LM pieces, kept so that old imports work: import from their modules instead.

:mod:`aligngym.agents.policies` (``CausalLMPolicy``, ``tiny_causal_lm``, ``check_vocab``),
:mod:`aligngym.agents.sampling` (``process_logits``, ``sample_actions``, ``Completion``, ``DecodeState``),
:mod:`aligngym.agents.lm_agent` (``LMAgent``, ``LMAgentConfig``, ``resolve_policy`` ...),
:mod:`aligngym.agents.vector_envs` (``as_vector_env``, ``autoreset_mode``, ``info_value`` ...) and
:mod:`aligngym.envs.reference` (``load_causal_lm``, ``default_reference_dir``, ``model_vocab_size``).
"""

from __future__ import annotations

from typing import Any

from aligngym.agents.lm_agent import (
    TINY_RANDOM,
    LMAgent,
    LMAgentConfig,
    autocast_context,
    default_policy_model,
    freeze_reference,
    model_config_dict,
    model_from_config_dict,
    policy_label,
    resolve_policy,
    spec_label,
    uses_default_tokenizer,
)
from aligngym.agents.policies import (
    POLICY_FILE,
    VALUE_HEAD_FILE,
    CausalLMPolicy,
    check_vocab,
    tiny_causal_lm,
)
from aligngym.agents.sampling import (
    Completion,
    DecodeState,
    LogitsHook,
    positions_from_mask,
    process_logits,
    sample_actions,
)
from aligngym.agents.vector_envs import (
    as_vector_env,
    autoreset_mode,
    eos_action_of,
    info_value,
    step_action_masks,
)
from aligngym.envs.reference import default_reference_dir, load_causal_lm, model_vocab_size


def env_runtime(env: Any) -> Any:
    """Deprecated alias of :func:`aligngym.envs.core.runtime_of` that raises for a non-aligngym env."""
    from aligngym.envs.core import runtime_of

    return runtime_of(env, required_by="env_runtime")


__all__ = [
    "POLICY_FILE",
    "TINY_RANDOM",
    "VALUE_HEAD_FILE",
    "CausalLMPolicy",
    "Completion",
    "DecodeState",
    "LMAgent",
    "LMAgentConfig",
    "LogitsHook",
    "as_vector_env",
    "autocast_context",
    "autoreset_mode",
    "check_vocab",
    "default_policy_model",
    "default_reference_dir",
    "env_runtime",
    "eos_action_of",
    "freeze_reference",
    "info_value",
    "load_causal_lm",
    "model_config_dict",
    "model_from_config_dict",
    "model_vocab_size",
    "policy_label",
    "positions_from_mask",
    "process_logits",
    "resolve_policy",
    "sample_actions",
    "spec_label",
    "step_action_masks",
    "tiny_causal_lm",
    "uses_default_tokenizer",
]
