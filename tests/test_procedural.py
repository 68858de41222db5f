"""Procedural verifiable tasks: registration, both env checkers, exact checkers per level, disjoint held-out
instances, seeding, level switching, and learning (tabular solves level 1; a GRU improves a middle level)."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import aligngym.envs
from aligngym.envs.procedural import (
    ProceduralSequenceEnv,
    ProceduralTokenEnv,
    procedural_env_ids,
    register_procedural,
)
from aligngym.envs.procedural_tasks import (
    FAMILIES,
    MAX_LEVEL,
    ProceduralScorer,
    get_family,
    instance_rows,
    instance_split,
)

register_procedural()
IDS = procedural_env_ids()
LEVELS = range(1, MAX_LEVEL + 1)


def _answer_actions(env: gym.Env, answer: str) -> list[int]:
    """Action indices that write ``answer`` (words with a leading space, digits and commas as they are) + EOS."""
    rt = env.unwrapped.runtime
    ids = list(rt.action_ids)
    out = []
    for word in answer.replace(",", " ,").split():
        if word == ",":
            text = ","
        elif word.isdigit():
            out.extend(ids.index(rt.tokenizer.single_token_id(ch)) for ch in word)
            continue
        else:
            text = " " + word
        out.append(ids.index(rt.tokenizer.single_token_id(text)))
    return [*out, ids.index(rt.eos_id)]


def test_every_procedural_id_is_registered_and_listed():
    listed = aligngym.envs.list_envs()
    assert len(IDS) == 2 * len(FAMILIES)
    for env_id in IDS:
        assert env_id in gym.registry
        assert env_id in listed and "difficulty" in listed[env_id]


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_gymnasium_and_sb3(env_id):
    env = gym.make(env_id, difficulty=2, max_difficulty=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("level", LEVELS)
def test_checker_accepts_the_answer_and_rejects_wrong_ones(family, level):
    fam = get_family(family)
    rows = instance_rows(family, level, "all", num_instances=20)
    scorer = ProceduralScorer()
    for row in rows:
        ctx = {"task": [row["task"]] * 5, "answer": [row["answer"]] * 5, "rule": [row["rule"]] * 5}
        wrong_extra = row["answer"] + (" red" if fam.unit == "word" else "1")
        completions = [
            row["answer"],
            " " + row["answer"] + " ",  # whitespace around the answer does not matter
            "",
            wrong_extra,
            "purple",
        ]
        exact = scorer([row["prompt"]] * 5, completions, **ctx)
        np.testing.assert_array_equal(exact, [1, 1, 0, 0, 0])
        partial = ProceduralScorer("partial")([row["prompt"]] * 5, completions, **ctx)
        assert partial[0] == 1.0 and np.all(partial[2:] < 1.0)


def test_checkers_on_known_cases():
    s = ProceduralScorer()

    def check(task: str, difficulty: int, prompt: str, completion: str) -> float:
        [row] = [r for r in instance_rows(task, difficulty, "all", 10**6) if r["prompt"] == prompt]
        return float(s([prompt], [completion], task=[task], answer=[row["answer"]], rule=[row["rule"]])[0])

    assert check("copy", 2, "Copy: red blue.", " red blue") == 1.0
    assert check("copy", 2, "Copy: red blue.", " blue red") == 0.0
    assert check("reverse", 2, "Reverse: red blue.", " blue red") == 1.0
    assert check("sort", 2, "Sort: 3 1 2.", "123") == 1.0
    assert check("sort", 2, "Sort: 3 1 2.", "312") == 0.0
    assert check("count", 2, "Count red: red blue red.", "2") == 1.0
    assert check("count", 2, "Count red: red blue red.", "3") == 0.0
    assert check("compare", 2, "Larger: 3 or 7?", "7") == 1.0
    assert check("compare", 2, "Larger: 3 or 7?", "3") == 0.0
    assert check("arithmetic", 2, "9 + 9 =", "18") == 1.0
    assert check("arithmetic", 4, "7 * 8 =", "56") == 1.0
    assert check("arithmetic", 3, "7 - 5 =", "2") == 1.0
    assert all(int(r["answer"]) >= 0 for r in instance_rows("arithmetic", 5, "all", 10**6))  # never negative
    # a format rule: several right answers, each verified
    for good in (" blue, red", " blue, yellow"):
        assert check("list_format", 2, "List 2 colours, first blue, not green:", good) == 1.0
    for bad in (" blue, green", " red, blue", " blue red", " blue, blue", " blue, red, yellow"):
        assert check("list_format", 2, "List 2 colours, first blue, not green:", bad) == 0.0


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("level", LEVELS)
def test_test_split_is_disjoint_from_train(family, level):
    train = {r["prompt"] for r in instance_rows(family, level, "train")}
    test = {r["prompt"] for r in instance_rows(family, level, "test")}
    assert train and test
    assert not train & test
    assert all(instance_split(p) == "test" for p in test)
    # held out across levels too: a test prompt of this level is never a train prompt of another
    if level < MAX_LEVEL:
        assert not test & {r["prompt"] for r in instance_rows(family, level + 1, "train")}


def test_test_env_draws_only_held_out_instances():
    env = gym.make("aligngym/Copy-Token-v0", difficulty=3, split="test")
    train = {r["prompt"] for r in instance_rows("copy", 3, "train")}
    for seed in range(50):
        _, info = env.reset(seed=seed)
        assert info["prompt"] not in train
    memorising = gym.make("aligngym/Copy-Token-v0", difficulty=1, split="test", heldout=False)
    assert {r["prompt"] for r in memorising.unwrapped.runtime.rows} == {
        r["prompt"] for r in instance_rows("copy", 1, "train")
    }


@pytest.mark.parametrize("env_id", IDS)
def test_right_answer_pays_one_at_every_level(env_id):
    env = gym.make(env_id, max_difficulty=MAX_LEVEL)
    for level in LEVELS:
        _, info = env.reset(seed=level, options={"difficulty": level})
        assert info["difficulty"] == level
        row = env.unwrapped.runtime.rows[info["prompt_index"]]
        actions = _answer_actions(env, row["answer"])
        if isinstance(env.action_space, gym.spaces.MultiDiscrete):
            n = env.action_space.shape[0]
            seq = np.array((actions + [actions[-1]] * n)[:n])
            _, reward, terminated, _, info = env.step(seq)
        else:
            for a in actions:
                _, reward, terminated, _, info = env.step(a)
                if terminated:
                    break
        assert terminated and reward == 1.0, (env_id, level, row, info["completion"])
        assert info["reward_components"] == {"exact": 1.0, "partial": 1.0}
        assert info["difficulty"] == level


def test_prompts_fit_the_prompt_slot_at_every_level():
    for family in FAMILIES:
        env = ProceduralTokenEnv(family, max_difficulty=MAX_LEVEL)
        tok, slot = env.runtime.tokenizer, env.runtime.max_prompt_tokens
        for level in LEVELS:
            for split in ("train", "test"):
                rows = instance_rows(family, level, split)
                assert max(len(ids) for ids in tok.encode_batch([r["prompt"] for r in rows])) <= slot


def test_same_seed_same_instance_and_spaces_fixed_across_levels():
    a = gym.make("aligngym/Sort-Token-v0", max_difficulty=4)
    b = gym.make("aligngym/Sort-Token-v0", max_difficulty=4)
    for seed in range(5):
        assert a.reset(seed=seed)[1]["prompt"] == b.reset(seed=seed)[1]["prompt"]
    spaces = (a.observation_space, a.action_space)
    a.reset(seed=0, options={"difficulty": 4})
    assert (a.observation_space, a.action_space) == spaces


def test_level_1_is_small_enough_for_a_table():
    for family in FAMILIES:
        env = ProceduralTokenEnv(family)
        assert env.action_space.n <= 8
        assert env.runtime.max_new_tokens <= 4


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="difficulty must be an integer in"):
        gym.make("aligngym/Copy-Token-v0", difficulty=0)
    with pytest.raises(ValueError, match="below difficulty"):
        gym.make("aligngym/Copy-Token-v0", difficulty=3, max_difficulty=2)
    env = gym.make("aligngym/Copy-Token-v0", max_difficulty=2)
    with pytest.raises(ValueError, match="above max_difficulty=2"):
        env.reset(options={"difficulty": 3})
    with pytest.raises(TypeError, match="makes its own prompts"):
        gym.make("aligngym/Copy-Token-v0", prompts=["hi"])
    with pytest.raises(ValueError, match="unknown procedural task"):
        ProceduralTokenEnv("juggle")
    with pytest.raises(ValueError, match="reward must be one of"):
        ProceduralSequenceEnv("copy", reward="close")


def test_env_pickles_and_native_vector_env_runs():
    env = gym.make("aligngym/Count-Token-v0", difficulty=2, max_difficulty=3)
    env.reset(seed=0, options={"difficulty": 3})
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert clone.difficulty == 3
    venv = gym.make_vec("aligngym/Count-Token-v0", num_envs=4, difficulty=2, max_difficulty=3)
    assert venv.single_action_space == env.action_space
    obs, _ = venv.reset(seed=0)
    assert obs["input_ids"].shape == (4, env.observation_space["input_ids"].shape[0])
    for _ in range(3):
        venv.step(venv.action_space.sample())


def test_tabular_q_learning_solves_level_1():
    from aligngym.agents.base import evaluate
    from aligngym.agents.tabular import QLearningAgent, QLearningConfig

    for family in ("Copy", "Arithmetic"):
        env = gym.make(f"aligngym/{family}-Token-v0")
        agent = QLearningAgent(env, QLearningConfig(seed=0)).learn(6000)
        result = evaluate(agent, gym.make(f"aligngym/{family}-Token-v0", split="test", heldout=False))
        assert result["mean_score"] == 1.0, family


def test_gru_reinforce_improves_a_middle_level_on_held_out_instances():
    import torch

    from aligngym.agents.base import evaluate
    from aligngym.agents.reinforce import ReinforceAgent, ReinforceConfig

    torch.manual_seed(0)
    env = gym.make("aligngym/Compare-Token-v0", difficulty=2, reward="partial")
    test = gym.make("aligngym/Compare-Token-v0", difficulty=2, split="test")
    cfg = ReinforceConfig(seed=0, num_envs=16, policy_kwargs={"embed_dim": 32, "hidden_size": 64})
    agent = ReinforceAgent(env, cfg)
    before = evaluate(agent, test)["mean_score"]
    agent.learn(8000)
    after = evaluate(agent, test)["mean_score"]
    assert after >= before + 0.3, (before, after)
