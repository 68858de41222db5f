"""Supervised demonstrations of the procedural tasks: each train instance's checker-correct answer, written with the
env's action tokens, never a held-out instance; and (slow, fixed seed) the suite's ``sft`` row lifting held-out
success on Reverse level 3 far above the untrained LM and the best constant answer, through the harness."""

from __future__ import annotations

from collections import Counter
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import aligngym.envs.procedural  # noqa: F401  (registers the ids)
from aligngym.agents.sft import demonstrations
from aligngym.envs.procedural_tasks import (
    ProceduralScorer,
    demonstration_pairs,
    instance_rows,
    is_procedural_rows,
)


@pytest.mark.parametrize(
    ("env_id", "level"), [("aligngym/Reverse-Token-v0", 3), ("aligngym/Sort-Token-v0", 2)]
)
def test_demonstrations_are_checker_correct_train_answers_in_action_tokens(env_id: str, level: int) -> None:
    env = gym.make(env_id, difficulty=level, split="train")
    core: Any = env.unwrapped
    runtime = core.runtime
    pairs = demonstrations(runtime)
    train = {r["prompt"]: r for r in runtime.rows}
    held_out = {r["prompt"] for r in instance_rows(core.procedural.family, level, "test")}
    assert len(pairs) == len(train) and {p for p, _ in pairs} == set(train)
    assert set(train) == {r["prompt"] for r in instance_rows(core.procedural.family, level, "train")}
    assert not held_out & {p for p, _ in pairs}  # no held-out instance is demonstrated
    rows = [train[p] for p, _ in pairs]
    exact = ProceduralScorer("exact")(
        [p for p, _ in pairs],
        [c for _, c in pairs],
        task=[r["task"] for r in rows],
        answer=[r["answer"] for r in rows],
        rule=[r["rule"] for r in rows],
    )
    assert np.all(exact == 1.0)
    # the completion is what the policy would write: every token is one of the env's actions
    allowed = {int(a) for a in runtime.action_ids}
    for _, completion in pairs:
        ids = runtime.tokenizer.encode(completion)
        assert ids and set(ids) <= allowed, (completion, ids)
    env.close()


def test_demonstrations_of_a_test_env_are_its_own_rows_only() -> None:
    """A test env demonstrates test rows (its own split); the harness fine-tunes on the train env only."""
    env = gym.make("aligngym/Copy-Token-v0", difficulty=2, split="test")
    core: Any = env.unwrapped
    prompts = {p for p, _ in demonstrations(core.runtime)}
    assert prompts == {r["prompt"] for r in instance_rows("copy", 2, "test")}
    env.close()


def test_demonstration_pairs_refuses_rows_that_are_not_procedural() -> None:
    assert not is_procedural_rows([])
    assert not is_procedural_rows([{"prompt": "Hi", "reference": "there"}])
    assert not is_procedural_rows([{"prompt": "Hi", "task": "sentiment", "answer": "x"}])
    with pytest.raises(ValueError, match="procedural instance rows"):
        demonstration_pairs([{"prompt": "Hi", "reference": "there"}])


def _best_constant(level: int) -> float:
    """Held-out success of the best constant answer on Reverse at ``level``."""
    test = instance_rows("reverse", level, "test")
    return Counter(r["answer"] for r in test).most_common(1)[0][1] / len(test)


@pytest.mark.slow
def test_suite_sft_row_learns_reverse_level_3_on_held_out_instances() -> None:
    """The procedural suite's Reverse rows at seed 0: SFT of the shipped reference LM on the train instances' answers
    takes held-out (disjoint) level-3 success from 0 (the untrained LM writes EOS) to far above the best constant
    answer (1 of 153). About 30 s on one core."""
    from aligngym.benchmarks.run import execute_run
    from aligngym.benchmarks.suite import expand_suite, load_suite

    specs = [
        s
        for s in expand_suite(load_suite("procedural"), seeds="0,", device="cpu")
        if s.env_id == "aligngym/Reverse-Token-v0"
    ]
    by_agent = {s.agent: s for s in specs}
    assert {"reference", "sft"} <= set(by_agent)
    assert by_agent["sft"].env_kwargs.get("difficulty") == 3
    baseline = _best_constant(3)
    assert baseline < 0.02
    ref = execute_run(by_agent["reference"], "/unused", write=False)
    sft = execute_run(by_agent["sft"], "/unused", write=False)
    assert ref["status"] == "ok" and sft["status"] == "ok", (ref["error"], sft["error"])
    start, end = sft["curve"][0]["mean_score"], sft["curve"][-1]["mean_score"]
    assert ref["curve"][-1]["mean_score"] <= baseline + 0.05
    assert end >= baseline + 0.5 and end >= start + 0.5, (start, end)
    assert sft["curve"][-1]["eval_difficulty"] == 3


@pytest.mark.slow
def test_suite_sft_then_grpo_raises_held_out_success_above_sft_alone() -> None:
    """Pretrain -> SFT -> RL (RL4LMs) through the harness at seed 0: the suite's ``sft-grpo`` row (80 SFT steps, then
    GRPO on the exact reward) ends well above the same 80 SFT steps alone (measured 0.810 against 0.379 on the 153
    held-out Reverse level-3 instances) and keeps rising while GRPO trains. About 1 minute on one core."""
    from aligngym.benchmarks.run import execute_run
    from aligngym.benchmarks.suite import expand_suite, load_suite

    specs = {
        s.agent: s
        for s in expand_suite(load_suite("procedural"), seeds="0,", device="cpu")
        if s.env_id == "aligngym/Reverse-Sequence-v0"
    }
    assert specs["sft-short"].agent_kwargs["sft_steps"] == specs["sft-grpo"].agent_kwargs["sft_steps"]
    sft = execute_run(specs["sft-short"], "/unused", write=False)
    rl = execute_run(specs["sft-grpo"], "/unused", write=False)
    assert sft["status"] == "ok" and rl["status"] == "ok", (sft["error"], rl["error"])
    sft_end = sft["curve"][-1]["mean_score"]
    rl_curve = [p["mean_score"] for p in rl["curve"]]
    assert sft_end >= _best_constant(3) + 0.2  # SFT alone already learns something
    assert rl_curve[-1] >= sft_end + 0.2, (sft_end, rl_curve)
    assert rl_curve[-1] > rl_curve[1], rl_curve  # still improving after its first 1,024 env steps
