"""The agents' shared pieces: policy resolution (no silent random fallback), vector-env helpers, the KV cache passed
the way the installed transformers wants it, and the command-line helper."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents import lm_agent
from aligngym.agents.cli import agent_parser, env_kwargs
from aligngym.agents.grpo import GRPOAgent, GRPOConfig
from aligngym.agents.policies import CausalLMPolicy, GRUPolicy, tiny_causal_lm
from aligngym.agents.ppo import PPOAgent, PPOConfig
from aligngym.agents.vector_envs import (
    as_vector_env,
    autoreset_mode,
    info_action_masks,
    info_value,
)
from aligngym.envs.hf import cache_kwarg, output_cache

SENTIMENT = "aligngym/Sentiment-Token-v0"
TARGET = "aligngym/Target-Token-v0"


def test_every_policy_is_importable_from_policies_and_the_old_lm_module() -> None:
    from aligngym.agents import lm

    assert lm.CausalLMPolicy is CausalLMPolicy and lm.tiny_causal_lm is tiny_causal_lm
    assert issubclass(GRUPolicy, torch.nn.Module)
    assert lm.LMAgent is lm_agent.LMAgent and lm.as_vector_env is as_vector_env


# -- policy resolution: no silent fallback ----------------------------------------------------------------------
def test_default_policy_on_another_tokenizer_raises_instead_of_a_random_model() -> None:
    env = gym.make(SENTIMENT, tokenizer="minilm", max_new_tokens=2)
    with pytest.raises(ValueError, match=r"tokenizer .*tiny-random"):
        PPOAgent(env, PPOConfig(device="cpu"))


def test_missing_shipped_model_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(lm_agent, "default_reference_dir", lambda: tmp_path / "nothing_here")
    env = gym.make(SENTIMENT, max_new_tokens=2)
    with pytest.raises(FileNotFoundError, match=r"no config.json.*tiny-random"):
        PPOAgent(env, PPOConfig(device="cpu"))


def test_tiny_random_is_explicit_and_labelled(tmp_path: Path) -> None:
    env = gym.make(SENTIMENT, tokenizer="minilm", max_new_tokens=2)
    agent = PPOAgent(env, PPOConfig(policy="tiny-random", device="cpu", num_envs=2, minibatch_size=2))
    assert agent.policy_label == "tiny-random"
    assert agent.policy.vocab_size == len(env.unwrapped.runtime.tokenizer)
    agent.learn(2)
    agent.save(tmp_path / "ckpt")
    back = PPOAgent.load(tmp_path / "ckpt", env)
    assert back.policy_label == "tiny-random"
    for (name, a), b in zip(agent.policy.state_dict().items(), back.policy.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_shipped_default_policy_is_labelled_default() -> None:
    env = gym.make("aligngym/Keywords-Sequence-v0", max_new_tokens=4)
    agent = GRPOAgent(env, GRPOConfig(device="cpu", num_generations=2, prompts_per_update=1))
    assert agent.policy_label == "default" and agent.policy.source == "default"
    model_agent = GRPOAgent(
        env,
        GRPOConfig(policy=tiny_causal_lm(agent.runtime.vocab_size), device="cpu", num_generations=2),
    )
    assert model_agent.policy_label == "object:GPT2LMHeadModel"


# -- context length: a clear error, never an IndexError or silently clamped positions --------------------------
def test_policy_shorter_than_the_env_context_is_refused_when_the_agent_is_built() -> None:
    env = gym.make(SENTIMENT, max_new_tokens=16)  # 24-token prompt slot + 16 = 40 tokens
    short = tiny_causal_lm(len(env.unwrapped.runtime.tokenizer), n_positions=32)
    with pytest.raises(ValueError, match=r"32 positions .* up to 40 tokens"):
        PPOAgent(env, PPOConfig(policy=short, device="cpu"))
    with pytest.raises(ValueError, match=r"32 positions .* up to 40 tokens"):
        CausalLMPolicy.for_env(env, short)
    with pytest.raises(ValueError, match=r"32 positions .* up to 40 tokens"):
        GRPOAgent(env, GRPOConfig(policy=CausalLMPolicy(short, tokenizer=env.unwrapped.runtime.tokenizer)))


def test_the_default_dialogue_context_fits_the_shipped_policy() -> None:
    from aligngym.agents.multiturn_ppo import MultiTurnPPOAgent, MultiTurnPPOConfig

    for env_id in ("aligngym/Dialogue-Token-v0", "aligngym/Dialogue-Sequence-v0"):
        env = gym.make(env_id)
        assert env.unwrapped.runtime.seq_len <= 128
        MultiTurnPPOAgent(env, MultiTurnPPOConfig(num_envs=2, device="cpu"))  # the shipped LM: 128 positions
    with pytest.raises(ValueError, match=r"128 positions .* up to 192 tokens"):
        MultiTurnPPOAgent(
            gym.make("aligngym/Dialogue-Token-v0", max_context_tokens=192), MultiTurnPPOConfig(device="cpu")
        )


@pytest.mark.parametrize("path", ["forward", "completion", "decode"])
def test_a_sequence_past_the_model_positions_raises_a_value_error(path: str) -> None:
    policy = CausalLMPolicy(tiny_causal_lm(50, n_positions=8), tokenizer=50, value_head=False)
    ids = torch.randint(1, 50, (2, 6))
    mask = torch.ones_like(ids)
    match = r"9 tokens does not fit the policy model's 8 positions"
    with pytest.raises(ValueError, match=match):
        if path == "forward":
            policy(torch.randint(1, 50, (2, 9)), torch.ones(2, 9, dtype=torch.long))
        elif path == "completion":
            policy.completion_logprobs(ids, mask, torch.randint(1, 50, (2, 3)), torch.ones(2, 3))
        else:  # the KV-cached decode reaches position 8 at its fourth token
            policy.sample(ids, mask, max_new_tokens=4)
    # within the positions, all three run
    policy(torch.randint(1, 50, (2, 8)), torch.ones(2, 8, dtype=torch.long))
    assert policy.sample(ids, mask, max_new_tokens=3).actions.shape == (2, 3)


# -- vector-env helpers -----------------------------------------------------------------------------------------
def test_as_vector_env_copies_a_single_env_and_keeps_a_vector_env() -> None:
    venv = as_vector_env(gym.make(TARGET), 3)
    assert isinstance(venv, SyncVectorEnv) and venv.num_envs == 3
    assert as_vector_env(venv, 7) is venv
    with pytest.raises(ValueError, match="num_envs must be positive, got 0"):
        as_vector_env(gym.make(TARGET), 0)


def test_autoreset_mode_names_the_mode_and_refuses_unsupported_ones() -> None:
    venv = SyncVectorEnv([lambda: gym.make(TARGET)], autoreset_mode=AutoresetMode.SAME_STEP)
    assert autoreset_mode(venv) == "SameStep"
    with pytest.raises(ValueError, match="unsupported autoreset mode 'SameStep'"):
        autoreset_mode(venv, supported=("NextStep",))


def test_info_value_reads_final_info_under_same_step_and_respects_presence_flags() -> None:
    info = {"score": np.array([0.5, 0.0]), "_score": np.array([True, False])}
    assert info_value(info, "score", 0, "NextStep") == 0.5
    assert info_value(info, "score", 1, "NextStep") is None
    assert info_value(info, "missing", 0, "NextStep") is None
    same_step = {"final_info": info}
    assert info_value(same_step, "score", 0, "SameStep") == 0.5


def test_info_action_masks_from_info_and_from_the_env() -> None:
    venv = SyncVectorEnv([lambda: gym.make(TARGET, min_new_tokens=1) for _ in range(2)])
    _, info = venv.reset(seed=0)
    n_actions = int(venv.single_action_space.n)
    masks = info_action_masks(venv, info, n_actions)
    assert masks.shape == (2, n_actions) and not masks.all()  # EOS is invalid before the first token
    assert info_action_masks(venv, {}, n_actions).all()
    bad = {"action_mask": np.zeros((2, n_actions), dtype=bool)}
    with pytest.raises(ValueError, match="no valid action"):
        info_action_masks(venv, bad, n_actions)


# -- transformers' KV cache, passed under the current name --------------------------------------------------------
def test_cache_is_passed_without_transformers_deprecation_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.utils import generic

    warned: list[str] = []
    # transformers 5.x logs its cache deprecation through this logger (4.x has none there)
    if hasattr(generic, "logger"):
        monkeypatch.setattr(generic.logger, "warning_once", lambda msg, *a, **k: warned.append(str(msg)))
    model = tiny_causal_lm(64, seed=0)
    name = next(iter(cache_kwarg(model, None)))
    assert name in ("cache", "past_key_values")
    policy = CausalLMPolicy(model, tokenizer=64, value_head=False)
    ids = torch.tensor([[1, 2, 3]])
    out = policy.sample(ids, torch.ones_like(ids), 4, generator=torch.Generator().manual_seed(0))
    assert out.actions.shape == (1, 4)
    assert output_cache(model(input_ids=ids, use_cache=True)) is not None
    assert not [w for w in warned if "deprecated" in w], warned


# -- the command-line helper ------------------------------------------------------------------------------------
def test_agent_parser_has_the_common_flags() -> None:
    parser = agent_parser("demo", TARGET, 123)
    args = parser.parse_args(["--max-new-tokens", "3", "--seed", "4"])
    assert (args.env, args.steps, args.seed, args.device, args.threads) == (TARGET, 123, 4, "auto", 1)
    assert env_kwargs(args) == {"max_new_tokens": 3}
    no_torch = agent_parser("demo", TARGET, 1, torch_flags=False).parse_args([])
    assert not hasattr(no_torch, "device")


def test_tabular_main_trains_and_compares_with_random(capsys: pytest.CaptureFixture[str]) -> None:
    from aligngym.agents.tabular import main

    out = main(["--steps", "300", "--seed", "0"])
    assert set(out) == {"trained", "baseline", "train_seconds"}
    assert "random" in capsys.readouterr().out
