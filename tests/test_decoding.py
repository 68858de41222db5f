"""RewardGuidedDecoder: w = 0 is plain decoding exactly; the bonus touches only the top-k; guidance raises scores."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents.base import evaluate
from aligngym.agents.decoding import DecodingConfig, RewardGuidedDecoder
from aligngym.agents.policies import tiny_causal_lm
from aligngym.envs.core import runtime_of


def _tiny(env) -> torch.nn.Module:
    rt = runtime_of(env)
    return tiny_causal_lm(rt.vocab_size, eos_token_id=rt.eos_id, seed=0)


def test_zero_weight_is_plain_sampling_exactly():
    env = gym.make("aligngym/Sentiment-Sequence-v0", max_new_tokens=8)
    decoder = RewardGuidedDecoder(env, DecodingConfig(policy=_tiny(env), weight=0.0, seed=3, device="cpu"))
    obs, _ = env.reset(seed=0)
    guided, _ = decoder.predict(obs)
    rt = runtime_of(env)
    p = rt.max_prompt_tokens
    ids = torch.as_tensor(obs["input_ids"][:p])[None]
    mask = torch.as_tensor(obs["attention_mask"][:p])[None]
    plain = decoder.policy.sample(
        ids,
        mask,
        rt.max_new_tokens,
        eos_action=rt.eos_id,
        action_masks=decoder.step_masks,
        generator=torch.Generator().manual_seed(3),
    )
    assert guided.tolist() == plain.actions[0].tolist()


def test_zero_weight_token_level_equals_the_policy_argmax():
    env = gym.make("aligngym/Sentiment-Token-v0", max_new_tokens=4)
    decoder = RewardGuidedDecoder(env, DecodingConfig(policy=_tiny(env), weight=0.0, device="cpu"))
    obs, _ = env.reset(seed=1)
    for _ in range(3):
        action, _ = decoder.predict(obs, deterministic=True)
        logits = decoder.policy(
            torch.as_tensor(obs["input_ids"])[None], torch.as_tensor(obs["attention_mask"])[None]
        )
        logits = logits.masked_fill(~torch.as_tensor(env.unwrapped.action_masks()), float("-inf"))
        assert int(action) == int(logits.argmax())
        obs, *_ = env.step(action)


def test_bonus_changes_only_the_top_k_candidates():
    env = gym.make("aligngym/Sentiment-Token-v0", max_new_tokens=4)
    decoder = RewardGuidedDecoder(
        env, DecodingConfig(policy=_tiny(env), weight=3.0, candidates=5, device="cpu")
    )
    rt = runtime_of(env)
    logits = torch.randn(2, rt.n_actions)
    good = rt.tokenizer.single_token_id(" great")
    logits[:, good] = 10.0  # sure to be a candidate
    rows = [rt.rows[0], rt.rows[1]]
    out = decoder.bonus(rows, [[], []], logits)
    changed = (out != logits).nonzero()
    top = torch.topk(logits, 5, dim=-1).indices
    for b, a in changed.tolist():
        assert a in top[b].tolist()
    assert (out[:, good] > logits[:, good]).all()  # " great" raises the VADER score


def test_learn_is_a_no_op_and_save_load_round_trips(tmp_path):
    env = gym.make("aligngym/Sentiment-Sequence-v0", max_new_tokens=4)
    decoder = RewardGuidedDecoder(env, DecodingConfig(policy=_tiny(env), weight=1.0, device="cpu"))
    before = {k: v.clone() for k, v in decoder.policy.state_dict().items()}
    decoder.learn(1000)
    assert all(torch.equal(before[k], v) for k, v in decoder.policy.state_dict().items())
    decoder.save(tmp_path / "d")
    back = RewardGuidedDecoder.load(tmp_path / "d", env)
    obs, _ = env.reset(seed=0)
    assert np.array_equal(
        decoder.predict(obs, deterministic=True)[0], back.predict(obs, deterministic=True)[0]
    )


def test_guidance_raises_sentiment_over_plain_decoding_without_training():
    """Shipped reference model, greedy decoding on the test prompts: w = 4 beats w = 0 by a clear margin."""
    env = gym.make("aligngym/Sentiment-Sequence-v0", split="test")
    scores = {}
    for w in (0.0, 4.0):
        decoder = RewardGuidedDecoder(env, DecodingConfig(weight=w, candidates=10, device="cpu"))
        scores[w] = evaluate(decoder, env, deterministic=True)["mean_score"]
    assert scores[4.0] > scores[0.0] + 0.2, scores


def test_custom_scorer_with_prompt_context_columns():
    """Keyword coverage as the guide: the per-prompt keywords come from the prompt set."""
    env = gym.make("aligngym/Keywords-Sequence-v0", split="test")
    scores = {}
    for w in (0.0, 4.0):
        decoder = RewardGuidedDecoder(
            env, DecodingConfig(weight=w, candidates=20, scorer="keywords", device="cpu")
        )
        scores[w] = evaluate(decoder, env, deterministic=True)["mean_score"]
    assert scores[4.0] > scores[0.0], scores


class _RecordingScorer:
    """A proxy guide: rewards completions with "great"/"good" in them and records what it was given."""

    name = "proxy"

    def __init__(self) -> None:
        self.context_keys: set[str] = set()
        self.calls = 0

    def __call__(self, prompts, completions, **context) -> np.ndarray:
        self.calls += 1
        self.context_keys |= set(context)
        return np.array([("great" in c) + ("good" in c) for c in completions], dtype=np.float32)


def test_default_mode_is_labelled_an_oracle():
    env = gym.make("aligngym/Similarity-Sequence-v0", max_new_tokens=4)
    decoder = RewardGuidedDecoder(env, DecodingConfig(policy=_tiny(env), device="cpu"))
    assert decoder.is_oracle
    assert decoder.scorer is env.unwrapped.runtime.scorer  # the evaluation scorer itself


def test_guide_scorer_mode_never_sees_the_test_rows_context():
    """Similarity test rows carry a ``reference`` column: the oracle passes it to its scorer, a guide never does."""
    env = gym.make("aligngym/Similarity-Sequence-v0", split="test", max_new_tokens=4)
    assert any("reference" in row for row in env.unwrapped.runtime.rows)
    guide = _RecordingScorer()
    decoder = RewardGuidedDecoder(
        env, DecodingConfig(policy=_tiny(env), guide_scorer=guide, weight=2.0, candidates=4, device="cpu")
    )
    assert not decoder.is_oracle
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        decoder.predict(obs)
    assert guide.calls > 0 and guide.context_keys == set()
    token_env = gym.make("aligngym/Similarity-Token-v0", split="test", max_new_tokens=2)
    token_decoder = RewardGuidedDecoder(
        token_env, DecodingConfig(policy=_tiny(token_env), guide_scorer=guide, candidates=4, device="cpu")
    )
    token_decoder.predict(token_env.reset(seed=0)[0])
    assert guide.context_keys == set()


def test_oracle_built_on_the_train_env_scores_test_prompts_with_their_keywords():
    """The harness builds the decoder on the train env and evaluates it on test prompts: the oracle finds a test
    prompt's keywords among the task's shipped rows (it used to pass none, and the keywords scorer raised)."""
    train_env = gym.make("aligngym/Keywords-Sequence-v0", max_new_tokens=4)
    test_env = gym.make("aligngym/Keywords-Sequence-v0", split="test", max_new_tokens=4)
    guide = _RecordingScorer()
    decoder = RewardGuidedDecoder(
        train_env, DecodingConfig(policy=_tiny(train_env), scorer=guide, candidates=4, device="cpu")
    )
    test_rows = test_env.unwrapped.runtime.rows
    train_prompts = {r["prompt"] for r in train_env.unwrapped.runtime.rows}
    assert not train_prompts & {r["prompt"] for r in test_rows}
    obs, _ = test_env.reset(seed=0)
    rows = decoder._rows(
        torch.as_tensor(obs["input_ids"])[None], torch.as_tensor(obs["attention_mask"])[None]
    )
    assert rows[0]["prompt"] in {r["prompt"] for r in test_rows}
    assert rows[0]["keywords"] == next(r["keywords"] for r in test_rows if r["prompt"] == rows[0]["prompt"])
    decoder.predict(obs, deterministic=True)
    assert "keywords" in guide.context_keys
    oracle = RewardGuidedDecoder(
        train_env, DecodingConfig(policy=_tiny(train_env), candidates=4, device="cpu")
    )
    score = evaluate(
        oracle, test_env, n_episodes=3, deterministic=True
    )  # the keywords scorer itself: no raise
    assert np.isfinite(score["mean_score"])
    non_oracle = RewardGuidedDecoder(
        train_env, DecodingConfig(policy=_tiny(train_env), guide_scorer=guide, candidates=4, device="cpu")
    )
    rows = non_oracle._rows(
        torch.as_tensor(obs["input_ids"])[None], torch.as_tensor(obs["attention_mask"])[None]
    )
    assert set(rows[0]) == {"prompt"}  # a guide never gets the test row's context


def test_scorer_and_guide_scorer_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        DecodingConfig(scorer="sentiment", guide_scorer="sentiment")


@pytest.mark.gpu
def test_decoder_runs_on_cuda():
    env = gym.make("aligngym/Sentiment-Sequence-v0", max_new_tokens=4)
    decoder = RewardGuidedDecoder(env, DecodingConfig(policy=_tiny(env), weight=1.0, device="cuda"))
    action, _ = decoder.predict(env.reset(seed=0)[0])
    assert env.action_space.contains(action)
