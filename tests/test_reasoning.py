"""reasoning-gym generators as aligngym envs: both checkers, the generator's own verifier as the scorer, config and
difficulty passed through, held-out questions; skipped when reasoning-gym is not installed."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import aligngym.envs  # noqa: F401

pytest.importorskip("reasoning_gym")

from aligngym.envs.reasoning import ReasoningScorer, generator_levels

GENERATORS = ["basic_arithmetic", "chain_sum", "leg_counting"]


@pytest.mark.parametrize("kind", ["Token", "Sequence"])
@pytest.mark.parametrize("generator", GENERATORS)
def test_check_env_on_reasoning_ids(kind, generator):
    env = gym.make(f"aligngym/Reasoning-{kind}-v0", generator=generator, num_instances=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)


@pytest.mark.parametrize("generator", GENERATORS)
def test_the_generators_verifier_pays_the_right_answer(generator):
    env = gym.make(
        "aligngym/Reasoning-Token-v0", generator=generator, num_instances=50, max_prompt_tokens=256
    )
    rt = env.unwrapped.runtime
    row = rt.rows[0]
    scorer = ReasoningScorer()
    ctx = {k: [row[k]] * 2 for k in ("answer", "metadata", "generator")}
    scores = scorer([row["prompt"]] * 2, [str(row["answer"]), "not an answer"], **ctx)
    assert scores[0] == 1.0 and scores[1] < 1.0
    # through the env: the answer's tokens written one by one
    _, info = env.reset(seed=0, options={"prompt_index": 0})
    ids = rt.tokenizer.encode(str(row["answer"]))
    assert len(ids) < rt.max_new_tokens
    for t in [*ids, rt.eos_id]:
        _, reward, terminated, _, info = env.step(t)
        if terminated:
            break
    assert reward == 1.0, info["completion"]


def test_config_and_difficulty_are_passed_through():
    env = gym.make("aligngym/Reasoning-Token-v0", generator="basic_arithmetic", min_terms=3, max_terms=3)
    for row in env.unwrapped.runtime.rows[:20]:
        assert row["metadata"]["num_terms"] == 3
    assert generator_levels("chain_sum") > 1
    easy = gym.make("aligngym/Reasoning-Token-v0", generator="chain_sum", difficulty=1, max_difficulty=3)
    _, info = easy.reset(seed=0)
    assert info["difficulty"] == 1
    easy_terms = max(r["metadata"]["num_terms"] for r in easy.unwrapped.runtime.rows)
    _, info = easy.reset(seed=0, options={"difficulty": 3})
    assert info["difficulty"] == 3
    hard_terms = max(r["metadata"]["num_terms"] for r in easy.unwrapped.runtime.rows)
    assert hard_terms > easy_terms
    with pytest.raises(ValueError, match="out of range"):
        gym.make("aligngym/Reasoning-Token-v0", generator="chain_sum", difficulty=99, max_difficulty=99)
    with pytest.raises(ValueError, match="unknown reasoning-gym generator"):
        gym.make("aligngym/Reasoning-Token-v0", generator="no_such_generator")


def test_test_split_questions_are_disjoint_from_train():
    kw = {"generator": "basic_arithmetic", "num_instances": 200}
    train = {r["prompt"] for r in gym.make("aligngym/Reasoning-Token-v0", **kw).unwrapped.runtime.rows}
    test = {
        r["prompt"]
        for r in gym.make("aligngym/Reasoning-Token-v0", split="test", **kw).unwrapped.runtime.rows
    }
    assert train and test and not train & test
