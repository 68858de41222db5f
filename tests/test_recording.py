"""RecordEpisodes: episodes of any agent to JSONL / Parquet and back, SFT pairs, offline-RL transitions rebuilt exactly,
truncated episodes, reference log-probs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import TimeLimit

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents.sb3 import make_sb3_agent
from aligngym.envs.wrappers import (
    FlatTokenObservation,
    RecordEpisodes,
    episodes_to_sft_pairs,
    episodes_to_transitions,
    load_episodes,
)

TARGET = "aligngym/Target-Token-v0"
TARGET_SEQ = "aligngym/Target-Sequence-v0"


def play(env: gym.Env, episodes: int, seed: int = 0) -> list[dict[str, Any]]:
    """Random episodes; returns what the loop saw (observations, actions, rewards, final info) per episode."""
    env.action_space.seed(seed)
    seen = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        ep: dict[str, Any] = {"obs": [obs], "actions": [], "rewards": []}
        done = False
        while not done:
            action = env.action_space.sample()
            obs, reward, terminated, truncated, info = env.step(action)
            ep["obs"].append(obs)
            ep["actions"].append(action)
            ep["rewards"].append(reward)
            done = terminated or truncated
        ep["info"] = info
        seen.append(ep)
    return seen


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_episodes_round_trip(suffix: str, tmp_path: Path) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    path = tmp_path / f"episodes{suffix}"
    env = RecordEpisodes(gym.make(TARGET), path)
    seen = play(env, 6)
    env.close()
    loaded = load_episodes(path)
    assert len(loaded) == 6
    for rec, ep in zip(loaded, seen):
        info = ep["info"]
        assert rec["prompt"] == info["prompt"] and rec["completion"] == info["completion"]
        assert rec["completion_ids"] == list(info["completion_ids"])
        assert rec["actions"] == [int(a) for a in ep["actions"]]
        assert rec["rewards"] == pytest.approx(ep["rewards"])
        assert rec["score"] == pytest.approx(info["score"])
        assert rec["reward_components"] == pytest.approx(info["reward_components"])
        assert rec["env_id"] == TARGET and rec["length"] == len(ep["actions"]) and rec["terminated"]


def test_transitions_rebuild_every_observation_exactly(tmp_path: Path) -> None:
    env = RecordEpisodes(gym.make(TARGET), tmp_path / "ep.jsonl")
    seen = play(env, 5, seed=3)
    env.close()
    data = episodes_to_transitions(load_episodes(tmp_path / "ep.jsonl"))
    obs = [o for ep in seen for o in ep["obs"][:-1]]
    nxt = [o for ep in seen for o in ep["obs"][1:]]
    np.testing.assert_array_equal(data["observations.input_ids"], np.stack([o["input_ids"] for o in obs]))
    np.testing.assert_array_equal(
        data["observations.attention_mask"], np.stack([o["attention_mask"] for o in obs])
    )
    np.testing.assert_array_equal(
        data["next_observations.input_ids"], np.stack([o["input_ids"] for o in nxt])
    )
    np.testing.assert_array_equal(data["actions"], [int(a) for ep in seen for a in ep["actions"]])
    np.testing.assert_allclose(data["rewards"], [r for ep in seen for r in ep["rewards"]])
    assert data["terminals"].sum() == 5 and not data["timeouts"].any()
    assert data["rewards"].dtype == np.float32 and data["actions"].dtype == np.int64


def test_sequence_episodes_give_one_transition_each(tmp_path: Path) -> None:
    env = RecordEpisodes(gym.make(TARGET_SEQ), tmp_path / "seq.jsonl")
    seen = play(env, 4)
    env.close()
    data = episodes_to_transitions(load_episodes(tmp_path / "seq.jsonl"))
    assert data["actions"].shape == (4, 4) and data["terminals"].all()
    np.testing.assert_array_equal(data["actions"], np.stack([ep["actions"][0] for ep in seen]))
    np.testing.assert_array_equal(
        data["next_observations.input_ids"], np.stack([ep["obs"][-1]["input_ids"] for ep in seen])
    )


def test_truncated_episodes_keep_their_tokens_and_are_timeouts(tmp_path: Path) -> None:
    env = RecordEpisodes(TimeLimit(gym.make(TARGET), max_episode_steps=2), tmp_path / "cut.jsonl")
    env.reset(seed=0)
    steps = 0
    done = False
    while not done:  # two colour words, no EOS: the TimeLimit cuts the episode
        _, _, terminated, truncated, _ = env.step(0)
        steps += 1
        done = terminated or truncated
    env.close()
    [rec] = load_episodes(tmp_path / "cut.jsonl")
    assert rec["truncated"] and not rec["terminated"] and rec["score"] is None
    assert len(rec["completion_ids"]) == steps == 2 and rec["completion"].strip() == "red red"
    data = episodes_to_transitions([rec])
    assert data["timeouts"].tolist() == [False, True] and not data["terminals"].any()


def test_sft_pairs_filter_and_rank_by_score() -> None:
    eps = [
        {"prompt": "a", "completion": "x", "score": 0.2},
        {"prompt": "a", "completion": "y", "score": 0.9},
        {"prompt": "b", "completion": "z", "score": 0.5},
        {"prompt": "b", "completion": "w", "score": None},
    ]
    assert episodes_to_sft_pairs(eps, min_score=0.4) == [("a", "y"), ("b", "z")]
    assert episodes_to_sft_pairs(eps, best_per_prompt=True) == [("a", "y"), ("b", "z")]
    assert episodes_to_sft_pairs(eps, top_fraction=0.25) == [("a", "y")]
    with pytest.raises(ValueError, match="top_fraction"):
        episodes_to_sft_pairs(eps, top_fraction=0)


def test_ref_logprobs_are_recorded_when_the_env_reports_them(tmp_path: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab = gym.make(TARGET).unwrapped.runtime.vocab_size
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    env = RecordEpisodes(
        gym.make(TARGET, reference_model=lm, ref_logprob_coef=0.1, device="cpu"), tmp_path / "ref.jsonl"
    )
    seen = play(env, 2)
    env.close()
    loaded = load_episodes(tmp_path / "ref.jsonl")
    for rec, ep in zip(loaded, seen):
        assert rec["ref_logprobs"] is not None and len(rec["ref_logprobs"]) == len(ep["actions"])
        assert all(lp < 0 for lp in rec["ref_logprobs"])


def test_an_sb3_agent_on_a_wrapped_env_is_recorded(tmp_path: Path) -> None:
    recorder = RecordEpisodes(gym.make(TARGET), tmp_path / "sb3.jsonl")
    env = FlatTokenObservation(
        recorder
    )  # the recorder reads infos, so it works under observation wrappers too
    make_sb3_agent("sb3-ppo", env, seed=0, device="cpu", n_steps=32).learn(64)
    env.close()
    loaded = load_episodes(tmp_path / "sb3.jsonl")
    assert len(loaded) == recorder.episodes_written >= 16  # horizon <= 4
    assert sum(r["length"] for r in loaded) <= 64
    assert all(len(r["prompt_ids"]) > 0 for r in loaded)


def test_bad_paths_and_lines_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.jsonl or \.parquet"):
        RecordEpisodes(gym.make(TARGET), tmp_path / "x.csv")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_episodes(bad)


# -- multi-turn envs ------------------------------------------------------------------------------------------------
MULTI_TURN = {
    "aligngym/Guess-Token-v0": {},
    "aligngym/Guess-Sequence-v0": {},
    # a cheap turn scorer keeps the test light; the default (preference_rm) is recorded the same way
    "aligngym/Dialogue-Token-v0": {"turn_scorer": "length", "max_turn_tokens": 6},
    "aligngym/Dialogue-Sequence-v0": {"turn_scorer": "length", "max_turn_tokens": 6},
}


def visible(obs: dict[str, np.ndarray]) -> list[int]:
    return [int(t) for t in obs["input_ids"][obs["attention_mask"] > 0]]


@pytest.mark.parametrize("env_id", list(MULTI_TURN))
def test_multi_turn_episodes_record_transcript_turn_scores_and_exact_transitions(
    env_id: str, tmp_path: Path
) -> None:
    path = tmp_path / "dialogue.jsonl"
    env = RecordEpisodes(gym.make(env_id, **MULTI_TURN[env_id]), path)
    seen = play(env, 3)
    env.close()
    loaded = load_episodes(path)
    assert len(loaded) == 3
    for rec, ep in zip(loaded, seen):
        info = ep["info"]
        assert rec["multi_turn"] and rec["env_id"] == env_id
        assert rec["transcript"] == [
            {"role": t["role"], "text": t["text"], "ids": list(t["ids"])} for t in info["transcript"]
        ]
        assert rec["turn_scores"] == pytest.approx(list(info["turn_scores"]))
        assert len(rec["turn_scores"]) == rec["turns"] == info["turn"]
        assert rec["score"] == pytest.approx(info["score"]) and rec["finish_reason"] == info["finish_reason"]
        assert rec["success"] == info["success"] and rec["gold_score"] is None
        assert rec["prompt"] == info["prompt"] and rec["completion"] == info["completion"]
        assert rec["prompt_ids"] == visible(ep["obs"][0])
        assert rec["history_ids"] == visible(ep["obs"][-1])
        assert rec["completion_ids"] == [
            i for t in info["transcript"] if t["role"] == "assistant" for i in t["ids"]
        ]
        assert rec["rewards"] == pytest.approx(ep["rewards"]) and rec["length"] == len(ep["actions"])
        assert rec["layout"]["max_prompt_tokens"] is None and rec["layout"]["user_sep"]
    data = episodes_to_transitions(loaded)
    obs = [o for ep in seen for o in ep["obs"][:-1]]
    nxt = [o for ep in seen for o in ep["obs"][1:]]
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(data[f"observations.{key}"], np.stack([o[key] for o in obs]))
        np.testing.assert_array_equal(data[f"next_observations.{key}"], np.stack([o[key] for o in nxt]))
    np.testing.assert_allclose(data["rewards"], [r for ep in seen for r in ep["rewards"]])
    assert data["terminals"].sum() == 3


def test_multi_turn_transitions_are_exact_when_the_history_is_left_truncated(tmp_path: Path) -> None:
    path = tmp_path / "trunc.jsonl"
    make = {"turn_scorer": "length", "max_turn_tokens": 8, "max_context_tokens": 40, "max_turns": 4}
    env = RecordEpisodes(gym.make("aligngym/Dialogue-Token-v0", context_overflow="truncate", **make), path)
    seen = play(env, 2)
    env.close()
    loaded = load_episodes(path)
    assert any(len(r["history_ids"]) > 40 for r in loaded)  # the window really slid
    data = episodes_to_transitions(loaded)
    obs = [o for ep in seen for o in ep["obs"][:-1]]
    np.testing.assert_array_equal(data["observations.input_ids"], np.stack([o["input_ids"] for o in obs]))
    nxt = [o for ep in seen for o in ep["obs"][1:]]
    np.testing.assert_array_equal(
        data["next_observations.input_ids"], np.stack([o["input_ids"] for o in nxt])
    )


def test_multi_turn_sft_pairs_raise_naming_why(tmp_path: Path) -> None:
    env = RecordEpisodes(gym.make("aligngym/Guess-Token-v0"), tmp_path / "g.jsonl")
    play(env, 1)
    env.close()
    with pytest.raises(ValueError, match="multi-turn conversation.*drop the user's replies"):
        episodes_to_sft_pairs(load_episodes(tmp_path / "g.jsonl"))


def test_multi_turn_episode_cut_by_a_time_limit(tmp_path: Path) -> None:
    env = RecordEpisodes(
        TimeLimit(gym.make("aligngym/Dialogue-Token-v0", **MULTI_TURN["aligngym/Dialogue-Token-v0"]), 3),
        tmp_path / "cut.jsonl",
    )
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(5)
        done = terminated or truncated
    env.close()
    [rec] = load_episodes(tmp_path / "cut.jsonl")
    assert rec["truncated"] and rec["transcript"] is None and len(rec["completion_ids"]) == 3
    assert rec["prompt_ids"] and rec["finish_reason"] == "truncated"
    with pytest.raises(ValueError, match="episode 0 was cut"):
        episodes_to_transitions([rec])


def test_multi_turn_episodes_round_trip_through_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    env = RecordEpisodes(gym.make("aligngym/Guess-Sequence-v0"), tmp_path / "g.parquet")
    seen = play(env, 2)
    env.close()
    loaded = load_episodes(tmp_path / "g.parquet")
    assert [r["transcript"][0]["ids"] for r in loaded] == [
        list(ep["info"]["transcript"][0]["ids"]) for ep in seen
    ]
    data = episodes_to_transitions(loaded)
    np.testing.assert_array_equal(
        data["next_observations.input_ids"], np.stack([o["input_ids"] for ep in seen for o in ep["obs"][1:]])
    )
