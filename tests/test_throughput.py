"""Throughput benchmark (parts b and c): it rolls out our own CausalLMPolicy over a tiny_causal_lm through the env
API, KV-cached, and generate() runs the very same weights."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents.policies import CausalLMPolicy
from aligngym.benchmarks.throughput_lm import bench_rollout, policy_env_rollout, rollout_policy

ENV = "aligngym/Sentiment-Token-v0"


def _batch_env(n: int, t: int) -> gym.vector.VectorEnv:
    return gym.make_vec(ENV, num_envs=n, autoreset_mode="batch", scorer="length", max_new_tokens=t)


def test_rollout_policy_is_our_causal_lm_policy() -> None:
    policy = rollout_policy(64, 32, n_layer=1, n_embd=16, eos_id=63)
    assert isinstance(policy, CausalLMPolicy) and policy.value_head is None
    assert type(policy.model).__name__ == "GPT2LMHeadModel" and policy.vocab_size == 64


def test_env_api_rollout_samples_what_the_policy_gives_and_the_env_records_it() -> None:
    venv = _batch_env(3, 4)
    rt = venv.unwrapped.runtime
    policy = rollout_policy(rt.vocab_size, 64, n_layer=1, n_embd=16, eos_id=rt.eos_id)
    torch.manual_seed(0)
    times = policy_env_rollout(policy, venv, seed=5, suppress_ids=[rt.eos_id])
    assert times.tokens == 3 * 4 and times.env_wall > 0.0
    # the same rollout by hand, without the KV cache: identical samples for the same torch seed
    obs, _ = venv.reset(seed=5)
    p = rt.max_prompt_tokens
    ids, mask = torch.as_tensor(obs["input_ids"][:, :p]), torch.as_tensor(obs["attention_mask"][:, :p])
    torch.manual_seed(0)
    tokens = []
    with torch.no_grad():
        for _ in range(4):
            logits = policy(ids, mask)
            logits[:, rt.eos_id] = -float("inf")
            a = torch.multinomial(torch.softmax(logits, dim=-1), 1)
            tokens.append(a[:, 0])
            ids, mask = torch.cat([ids, a], 1), torch.cat([mask, torch.ones_like(a)], 1)
    torch.manual_seed(0)
    venv2 = _batch_env(3, 4)
    recorded = []
    orig_step = venv2.step

    def step(actions: np.ndarray):  # type: ignore[no-untyped-def]
        recorded.append(np.array(actions))
        return orig_step(actions)

    venv2.step = step  # type: ignore[method-assign]
    policy_env_rollout(policy, venv2, seed=5, suppress_ids=[rt.eos_id])
    assert np.array_equal(np.stack(recorded, 1), torch.stack(tokens, 1).numpy())


def test_bench_rollout_reports_the_policy_it_measured() -> None:
    out = bench_rollout(ENV, 2, 3, ["length"], reps=1, device="cpu", n_layer=1, n_embd=16)
    assert out["model"]["policy"].startswith("CausalLMPolicy over GPT2LMHeadModel")
    assert set(out["tokens_per_s"]["cpu"]) == {"env_api_length", "kv_loop_no_env", "generate"}
