"""Gold scores in the envs: ``gold=`` takes what ``scorer=`` takes, is reported at episode end in ``info`` and never
enters the reward; the native vector env batches it like the score; the recorder stores it."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import aligngym.envs  # noqa: F401
from aligngym.envs import TASKS, Task, TaskRuntime
from aligngym.envs.recording import RecordEpisodes, load_episodes
from aligngym.envs.vector import SequenceVectorEnv, TokenVectorEnv
from tests.test_vector import assert_same, random_actions

TEXT_TOKEN = "aligngym/Text-Token-v0"
TEXT_SEQ = "aligngym/Text-Sequence-v0"
PROMPTS = ["The soup was", "Our trip to the coast", "The film"]


class CountingGold:
    """A gold judge that counts its calls: the number of characters of each completion."""

    name = "chars"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, prompts: list[str], completions: list[str], **context: Any) -> np.ndarray:
        self.calls.append(len(completions))
        return np.array([len(c) for c in completions], dtype=np.float32)


def rollout(env: gym.Env, seed: int, steps: int = 40) -> list[tuple[Any, ...]]:
    """(obs ids, reward, terminated, info) per step with a seeded action stream, resetting at episode ends."""
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    out: list[tuple[Any, ...]] = [(obs["input_ids"].tolist(), None, None, info)]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        out.append((obs["input_ids"].tolist(), reward, terminated, info))
        if terminated or truncated:
            obs, info = env.reset()
    return out


@pytest.mark.parametrize("env_id", [TEXT_TOKEN, TEXT_SEQ])
@pytest.mark.parametrize("shaping", [None, "delta"])
def test_gold_never_changes_the_reward(env_id: str, shaping: str | None) -> None:
    kw: dict[str, Any] = {"prompts": PROMPTS, "scorer": "sentiment", "max_new_tokens": 4}
    if shaping is not None and env_id == TEXT_TOKEN:
        kw["reward_shaping"] = shaping
    plain = rollout(gym.make(env_id, **kw), seed=3)
    judged = rollout(gym.make(env_id, gold={"length": 1.0, "blocklist": 2.0}, **kw), seed=3)
    ends = 0
    for (ids_a, r_a, t_a, info_a), (ids_b, r_b, t_b, info_b) in zip(plain, judged):
        assert ids_a == ids_b and r_a == r_b and t_a == t_b
        assert "gold_score" not in info_a
        assert_same(info_a, {k: v for k, v in info_b.items() if not k.startswith("gold_")})
        if t_b:
            ends += 1
            assert isinstance(info_b["gold_score"], float)
            assert set(info_b["gold_components"]) == {"length", "blocklist"}
            gold = info_b["gold_components"]["length"] + 2.0 * info_b["gold_components"]["blocklist"]
            assert info_b["gold_score"] == pytest.approx(gold)
        else:
            assert "gold_score" not in info_b
    assert ends >= 3


def test_task_default_gold_and_gold_false() -> None:
    task = Task(name="GoldDemo", description="demo", prompt_file=None, scorer="sentiment", gold="length")
    rt = TaskRuntime(task, prompts=PROMPTS)
    assert rt.has_gold and rt.gold_scorer is not None and rt.gold_scorer.name == "length"
    assert not TaskRuntime(task, prompts=PROMPTS, gold=False).has_gold
    assert TaskRuntime(task, prompts=PROMPTS, gold="blocklist").gold_scorer.name == "blocklist"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="gold=True"):
        TaskRuntime(task, prompts=PROMPTS, gold=True)
    with pytest.raises(TypeError, match="gold"):
        TaskRuntime(task, prompts=PROMPTS, gold=42)


def test_every_shipped_task_declares_a_gold_scorer_other_than_its_reward() -> None:
    for name, task in TASKS.items():
        if name == "Text":
            assert task.gold is None  # the user's prompts and scorer: no gold to guess
        elif name == "Target":
            assert task.gold == task.scorer  # the reward is already exact
        else:
            assert task.gold is not None and task.gold != task.scorer, name


def test_gold_with_the_scorers_own_name_reuses_the_score() -> None:
    env = gym.make(TEXT_SEQ, prompts=PROMPTS, scorer="sentiment", gold="sentiment", max_new_tokens=3)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert info["gold_score"] == info["score"] == reward
    assert info["gold_components"] == info["reward_components"]


@pytest.mark.parametrize("cls", [TokenVectorEnv, SequenceVectorEnv])
def test_vector_env_gold_equals_the_single_env_gold(cls: type) -> None:
    kw: dict[str, Any] = {
        "task": "Text",
        "prompts": PROMPTS,
        "scorer": "sentiment",
        "gold": {"length": 1.0, "blocklist": 1.0},
        "max_new_tokens": 3,
    }
    env_id = TEXT_TOKEN if cls is TokenVectorEnv else TEXT_SEQ
    native = cls(4, **kw)
    kw.pop("task")
    sync = gym.make_vec(env_id, num_envs=4, vectorization_mode="sync", **kw)
    actions = random_actions(native, 12, seed=1)
    seen = 0
    for venv_steps in zip([native.reset(seed=5)], [sync.reset(seed=5)]):
        assert_same(venv_steps[0][1], venv_steps[1][1])
    for a in actions:
        x, y = native.step(a), sync.step(a)
        for k, (u, v) in enumerate(zip(x, y)):
            assert_same(u, v, f"item {k}")
        if "gold_score" in x[4]:
            np.testing.assert_array_equal(x[4]["gold_score"], y[4]["gold_score"])  # rule-based gold: exact
            seen += int(x[4]["_gold_score"].sum())
            assert set(x[4]["gold_components"]) >= {"length", "blocklist"}
    assert seen >= 4


def test_vector_env_calls_gold_once_per_step_for_the_finished_rows() -> None:
    gold = CountingGold()
    venv = TokenVectorEnv(4, task="Text", prompts=["a"], scorer="length", gold=gold, max_new_tokens=3)
    venv.reset(seed=0)
    eos = venv.runtime.eos_id
    venv.step(np.array([eos, 20, 20, eos]))
    venv.step(np.array([20, 20, 20, 20]))  # NEXT_STEP: rows 0 and 3 reset; 1 and 2 continue
    _, _, term, _, infos = venv.step(np.array([20, 20, 20, 20]))
    assert gold.calls == [2, 2]
    assert term.tolist() == [False, True, True, False]
    assert infos["_gold_score"].tolist() == [False, True, True, False]


def test_gold_is_chunked_like_the_score() -> None:
    gold = CountingGold()
    venv = SequenceVectorEnv(
        8, task="Text", prompts=["a"], scorer="length", gold=gold, max_new_tokens=2, scorer_batch_size=3
    )
    venv.reset(seed=0)
    venv.step(np.full((8, 2), 20))
    assert gold.calls == [3, 3, 2]


def test_recorder_stores_the_gold_score(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    env = RecordEpisodes(
        gym.make(TEXT_SEQ, prompts=PROMPTS, scorer="sentiment", gold="length", max_new_tokens=3), path
    )
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    env.close()
    plain = RecordEpisodes(gym.make(TEXT_SEQ, prompts=PROMPTS, scorer="sentiment", max_new_tokens=3), path)
    plain.reset(seed=0)
    plain.step(plain.action_space.sample())
    plain.close()
    first, second = load_episodes(path)
    assert first["gold_score"] == pytest.approx(info["gold_score"])
    assert first["gold_components"] == {"length": pytest.approx(info["gold_components"]["length"])}
    assert second["gold_score"] is None and second["gold_components"] is None


def test_env_with_a_named_gold_pickles_and_rebuilds_it() -> None:
    env = gym.make(TEXT_SEQ, prompts=PROMPTS, scorer="sentiment", gold="length", max_new_tokens=3)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert clone.runtime._gold is None  # rebuilt from its name, not pickled
    clone.reset(seed=0)
    _, _, _, _, info = clone.step(clone.action_space.sample())
    assert "gold_score" in info
