"""GRPOAgent samples all P x G completions of an update in one batch: the same completions and scores as sampling
group by group (deterministic sampling, top_k=1), one env step with a native vector env of P x G rows, and no
extra policy forward for the old log-probs when the update is on-policy (n_epochs=1)."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents.grpo import GRPOAgent, GRPOConfig
from aligngym.agents.policies import tiny_causal_lm
from aligngym.envs.core import runtime_of

ENV = "aligngym/Sentiment-Sequence-v0"
KW: dict[str, Any] = {"max_new_tokens": 4, "scorer": "length", "gold": False}


def _agent(env: Any, **config: Any) -> GRPOAgent:
    rt = runtime_of(env)
    policy = tiny_causal_lm(rt.vocab_size, eos_token_id=rt.eos_id, seed=0)
    cfg = {"policy": policy, "num_generations": 3, "prompts_per_update": 4, "seed": 0, "device": "cpu"}
    return GRPOAgent(env, GRPOConfig(**{**cfg, **config}))


def _per_group(agent: GRPOAgent, venv: Any, prompt_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The collect of before the batching: reset per group, sample that group, step it."""
    actions, scores = [], []
    for i in prompt_idx:
        obs, _ = venv.reset(options={"prompt_index": int(i)})
        ids, mask, _ = agent._obs_tensors(obs)
        out = agent._generate(*agent._prompt_part(ids, mask))
        _, _, _, _, info = venv.step(out.actions.cpu().numpy())
        actions.append(out.actions.cpu().numpy())
        scores.append(np.asarray(info["score"], dtype=np.float32))
    return np.concatenate(actions), np.stack(scores)


def test_batched_collect_equals_group_by_group_sampling() -> None:
    agent = _agent(gym.make(ENV, **KW), top_k=1)  # deterministic sampling: defined regardless of batching
    venv = agent._vector_env()
    prompt_idx = copy.deepcopy(agent.rng).integers(len(agent.runtime.rows), size=4)
    batch = agent.collect(venv)
    actions, scores = _per_group(agent, venv, prompt_idx)
    np.testing.assert_array_equal(batch["actions"].numpy(), actions)
    np.testing.assert_allclose(batch["scores"], scores)
    assert len(set(prompt_idx.tolist())) > 1  # several prompts in one batch


def test_native_vector_env_of_every_row_scores_the_update_in_one_step() -> None:
    single = _agent(gym.make(ENV, **KW), top_k=1)
    native_env = gym.make_vec(ENV, num_envs=12, **KW)
    native = _agent(native_env, top_k=1)
    steps = []
    step = native_env.step

    def counting_step(actions: np.ndarray) -> Any:
        steps.append(actions.shape)
        return step(actions)

    native_env.step = counting_step  # type: ignore[method-assign]
    a, b = single.collect(single._vector_env()), native.collect(native_env)
    assert steps == [(12, 4)]
    np.testing.assert_array_equal(a["actions"].numpy(), b["actions"].numpy())
    np.testing.assert_allclose(a["scores"], b["scores"])
    assert a["completions"] == b["completions"]


def test_vector_env_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="num_generations=3 sub-envs .* or of prompts_per_update x"):
        _agent(gym.make_vec(ENV, num_envs=5, **KW))


def test_on_policy_update_runs_one_policy_forward_and_a_ratio_of_one() -> None:
    agent = _agent(gym.make(ENV, **KW), beta=0.0)
    batch = agent.collect(agent._vector_env())
    calls = []
    original = agent._logprobs

    def counting(model: Any, b: dict[str, Any]) -> torch.Tensor:
        calls.append(model is agent.policy)
        return original(model, b)

    agent._logprobs = counting  # type: ignore[method-assign]
    metrics = agent.update(batch)
    assert calls == [True] and metrics["losses/approx_kl"] == 0.0 and metrics["losses/clipfrac"] == 0.0
