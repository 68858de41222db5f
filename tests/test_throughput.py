"""Throughput benchmark (parts b and c): it rolls out our own CausalLMPolicy over a tiny_causal_lm through the env
API, KV-cached, and generate() runs the very same weights."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
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


def test_bench_reference_times_cached_uncached_and_a_kv_forward_per_length() -> None:
    from aligngym.benchmarks.throughput_ref import bench_reference

    out = bench_reference(ENV, 2, (2, 3), reps=1)
    assert set(out["ms_per_step"]["cpu"]) == {
        f"{p}_{t}" for p in ("cached", "uncached", "kv_forward") for t in (2, 3)
    }
    assert set(out["ratios"]["cpu"]) == {
        "cached_flat",
        "uncached_flat",
        "cached_vs_kv_forward_2",
        "cached_vs_kv_forward_3",
    }
    assert all(v > 0 for v in out["ms_per_step"]["wall"].values())


def test_bench_scorers_times_what_builds_and_says_why_the_rest_is_skipped() -> None:
    from aligngym.benchmarks.throughput_scorers import bench_scorers

    out = bench_scorers(["length", "keywords", "human", "reward_model"], batch=4, reps=1)
    assert set(out["completions_per_s"]["wall"]) == {"length", "keywords"}
    assert out["task"] == {"length": "Sentiment", "keywords": "Keywords"}  # keywords needs Keywords' context
    assert "interactive" in out["skipped"]["human"] and "model_dir" in out["skipped"]["reward_model"]


def test_bench_agents_times_whole_updates_of_our_grpo_and_ppo() -> None:
    from aligngym.benchmarks.throughput_agents import bench_agents

    out = bench_agents(prompts=2, generations=2, max_new_tokens=3, reps=1, with_trl=False)
    rates = out["completions_per_s"]["cpu"]
    assert set(rates) == {"grpo_update", "ppo_update"} and all(r > 0 for r in rates.values())
    assert [s[0] for s in out["samples"]["grpo_update"]] == [4]  # 2 prompts x 2 completions per update
    assert "skipped" in out["note"] and out["peak_memory_mb"]["grpo_update"] > 0


def test_bench_agents_runs_trl_grpo_trainer_alternating_with_ours() -> None:
    pytest.importorskip("trl")
    from aligngym.benchmarks.throughput_agents import bench_agents

    out = bench_agents(prompts=2, generations=2, max_new_tokens=3, reps=2)
    assert out["note"] is None and len(out["samples"]["trl_grpo_trainer"]) == 2
    assert len(out["samples"]["grpo_update"]) == 2 and out["ratios"]["cpu"]["grpo_update_vs_trl"] > 0


def test_run_throughput_runs_only_the_parts_asked_and_reports_their_targets() -> None:
    from aligngym.benchmarks.throughput import run_throughput
    from aligngym.benchmarks.throughput_report import format_markdown

    out = run_throughput(ENV, parts=["d"], ref_batch=2, ref_lengths=(2, 3), reps=1)
    assert out["env_steps"] == [] and out["rollout"] is None and out["agents"] is None
    assert set(out["targets"]) == {"d_ref_flat", "d_ref_vs_kv_forward"}
    assert "(d) reference term per step" in format_markdown(out)
    with pytest.raises(ValueError, match="parts must be among"):
        run_throughput(ENV, parts=["z"])


def test_cli_quick_runs_the_reference_agent_and_scorer_parts(tmp_path: Path) -> None:
    from aligngym.benchmarks.throughput import main

    out = tmp_path / "t.json"
    assert main(["--quick", "--parts", "d,e,f", "--no-trl", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["parts"] == ["d", "e", "f"] and result["env_steps"] == []
    assert set(result["targets"]) == {"d_ref_flat", "d_ref_vs_kv_forward"}  # no TRL peer: no (e) verdict
    assert result["agents"]["note"].startswith("TRL's GRPOTrainer skipped")
    assert "length" in result["scorers"]["completions_per_s"]["wall"]
