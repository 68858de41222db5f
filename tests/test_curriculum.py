"""The curriculum wrapper: the adaptive rule, fixed schedules, the level in info, shared state across copies, and
(at a fixed seed) a curriculum that masters a higher level than a fixed schedule in the same budget."""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest

import aligngym.envs.procedural  # noqa: F401  (registers the procedural ids)
from aligngym.envs.curriculum import (
    Curriculum,
    CurriculumController,
    linear_schedule,
    make_curriculum_vec,
)


def _play(env: gym.Env, right: bool) -> dict:
    """One Copy episode that writes the right answer, or nothing (EOS at once: always wrong)."""
    _, info = env.reset()
    rt = env.unwrapped.runtime
    row = rt.rows[info["prompt_index"]]
    ids = list(rt.action_ids)
    words = row["answer"].split() if right else []
    actions = [ids.index(rt.tokenizer.single_token_id(" " + w)) for w in words]
    for a in [*actions, ids.index(rt.eos_id)]:
        _, _, terminated, _, info = env.step(a)
        if terminated:
            return info
    raise AssertionError("episode did not end")


def test_controller_moves_up_on_success_and_down_on_failure():
    c = CurriculumController(1, 3, 1, target_success=0.75, hysteresis=0.5, window=4)
    for _ in range(3):
        c.on_episode_end(True)
    assert c.level == 1  # not judged before a full window
    c.on_episode_end(True)
    assert c.level == 2 and c.mastered == 1 and c.success_rate is None  # the record restarts at a new level
    for _ in range(4):
        c.on_episode_end(False)
    assert c.level == 1  # 0.0 < 0.75 - 0.5
    c.on_episode_end(True, level=2)  # an episode started at the old level is not recorded
    assert c.success_rate is None


def test_controller_holds_between_the_thresholds_and_stays_in_range():
    c = CurriculumController(1, 2, 2, target_success=0.75, hysteresis=0.5, window=4)
    for ok in (True, True, False, False) * 3:  # 0.5: between 0.25 and 0.75
        c.on_episode_end(ok)
    assert c.level == 2
    for _ in range(8):
        c.on_episode_end(True)
    assert c.level == 2  # already at the top


def test_fixed_schedule_from_pairs_and_from_a_function():
    c = CurriculumController(1, 3, 1, schedule=[(0, 1), (10, 2), (20, 3)])
    levels = []
    for _ in range(25):
        levels.append(c.level_for_next_episode())
        c.on_step()
        c.on_episode_end(False)
    assert levels[:10] == [1] * 10 and levels[10:20] == [2] * 10 and levels[20:] == [3] * 5
    f = CurriculumController(1, 3, 1, schedule=lambda steps, episodes: 1 + min(2, episodes // 5))
    seen = []
    for _ in range(15):
        seen.append(f.level_for_next_episode())
        f.on_episode_end(True)
    assert seen == [1] * 5 + [2] * 5 + [3] * 5
    assert linear_schedule(300, 1, 3) == [(0, 1), (100, 2), (200, 3)]


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="target_success"):
        CurriculumController(1, 3, 1, target_success=1.5)
    with pytest.raises(ValueError, match="start at 0"):
        CurriculumController(1, 3, 1, schedule=[(5, 2)])
    with pytest.raises(ValueError, match="outside"):
        CurriculumController(1, 3, 1, schedule=[(0, 4)])
    bad = CurriculumController(1, 3, 1, schedule=lambda s, e: 7)
    with pytest.raises(ValueError, match="schedule returned 7"):
        bad.level_for_next_episode()
    with pytest.raises(ValueError, match="at least two levels"):
        Curriculum(gym.make("aligngym/Copy-Token-v0"))
    with pytest.raises(ValueError, match="no max_difficulty"):
        Curriculum(gym.make("aligngym/Target-Token-v0"))


def test_wrapper_moves_the_env_and_reports_the_level_in_info():
    env = Curriculum(gym.make("aligngym/Copy-Token-v0", max_difficulty=3), target_success=0.7, window=4)
    env.reset(seed=0)
    infos = [_play(env, right=True) for _ in range(4)]
    assert [i["difficulty"] for i in infos] == [1, 1, 1, 1]
    _, info = env.reset()
    assert info["difficulty"] == 2 and env.unwrapped.difficulty == 2
    assert info["curriculum"]["level"] == 2 and info["curriculum"]["mastered"] == 1
    prompt = info["prompt"]
    assert prompt.startswith("Copy: ") and len(prompt.split()) - 1 >= 2  # level 2: 2-3 words
    for _ in range(4):
        info = _play(env, right=False)
        assert info["score"] == 0.0
    _, info = env.reset()
    assert info["difficulty"] == 1  # four failures: 0.0 < 0.7 - 0.5


def test_deep_copies_share_one_curriculum():
    env = Curriculum(gym.make("aligngym/Count-Token-v0", max_difficulty=2), window=2)
    twin = copy.deepcopy(env)
    assert twin.controller is env.controller
    assert twin.env is not env.env


def test_vector_form_moves_every_copy_with_one_controller():
    venv = make_curriculum_vec(
        "aligngym/Count-Token-v0", 4, {"max_difficulty": 3}, target_success=0.5, window=8, start_level=1
    )
    _, info = venv.reset(seed=0)
    assert list(info["difficulty"]) == [1, 1, 1, 1]
    ctrl = venv.envs[0].controller
    assert all(e.controller is ctrl for e in venv.envs)
    for _ in range(8):
        ctrl.on_episode_end(True)  # as if eight episodes at level 1 had succeeded, in any copy
    levels = set()
    for _ in range(6):  # Count episodes take two steps; NEXT_STEP autoreset starts the next one at level 2
        _, _, _, _, info = venv.step(venv.action_space.sample())
        levels.update(int(d) for d in info["difficulty"])
    assert 2 in levels and ctrl.level >= 2
    with pytest.raises(ValueError, match="num_envs"):
        make_curriculum_vec("aligngym/Count-Token-v0", 0, {"max_difficulty": 3})


def test_reset_options_are_kept_and_difficulty_added():
    env = Curriculum(gym.make("aligngym/Sort-Token-v0", max_difficulty=2), start_level=2)
    _, info = env.reset(seed=0, options={"prompt_index": 3})
    assert info["prompt_index"] == 3 and info["difficulty"] == 2


@pytest.mark.slow
def test_curriculum_masters_a_higher_level_than_a_fixed_schedule_in_the_same_budget():
    """GRU REINFORCE on Count (levels 1-4, one-digit answers) for the same number of env steps: the adaptive
    curriculum reaches (and masters) a higher level than a linear fixed schedule."""
    import torch

    from aligngym.agents.reinforce import ReinforceAgent, ReinforceConfig

    def run(schedule: list[tuple[int, int]] | None) -> CurriculumController:
        torch.manual_seed(0)
        base = gym.make("aligngym/Count-Token-v0", max_difficulty=4)
        env = Curriculum(base, target_success=0.7, hysteresis=0.7, window=32, schedule=schedule)
        cfg = ReinforceConfig(
            seed=0, num_envs=16, learning_rate=6e-3, policy_kwargs={"embed_dim": 32, "hidden_size": 64}
        )
        ReinforceAgent(env, cfg).learn(BUDGET)
        return env.controller

    adaptive = run(None)
    fixed = run(linear_schedule(BUDGET, 1, 4))
    assert adaptive.mastered > fixed.mastered, (adaptive.state(), fixed.state())
    assert adaptive.env_steps >= BUDGET and fixed.env_steps >= BUDGET


BUDGET = 16000  # env steps; each run about 30 s on one core
