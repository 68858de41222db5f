"""Practice prompts (agents/practice_prompts.py): Keywords triples from the reference LM's train vocabulary, and the
harness's ``train_prompts`` option that trains on them while evaluating on the task's test split."""

from __future__ import annotations

import collections
import re

import pytest

from aligngym.agents.practice_prompts import (
    check_practice_config,
    keyword_practice_rows,
    keyword_vocabulary,
    practice_rows,
)
from aligngym.agents.pretrain_reference import load_split
from aligngym.benchmarks.run import make_test_env, make_train_env
from aligngym.benchmarks.suite import RunSpec, expand_suite
from aligngym.envs.data import data_path
from aligngym.envs.prompts import load_prompt_rows
from aligngym.envs.tasks import get_task

KW_SEQ = "aligngym/Keywords-Sequence-v0"
PRACTICE = {"source": "keyword-practice", "n": 200, "seed": 0}


def test_practice_rows_are_deterministic_new_triples_of_train_words() -> None:
    rows = keyword_practice_rows(300, seed=3)
    assert rows == keyword_practice_rows(300, seed=3)
    assert rows != keyword_practice_rows(300, seed=4)
    assert len({frozenset(r["keywords"]) for r in rows}) == 300
    task_sets = {frozenset(r["keywords"]) for r in load_prompt_rows(get_task("Keywords"), split="all")}
    train_docs, held_docs, _ = load_split(data_path("corpus.txt"), data_path("corpus_split.json"))
    train_counts = collections.Counter(w for d in train_docs for w in re.findall(r"[a-z]+", d.lower()))
    for r in rows:
        assert r["prompt"] == f"Write a sentence using: {', '.join(r['keywords'])}."
        assert "reference" not in r
        assert frozenset(r["keywords"]) not in task_sets
        assert all(train_counts[w] >= 5 for w in r["keywords"])
    # a word that only the held-out documents use is never a practice word
    held_only = {w for d in held_docs for w in re.findall(r"[a-z]+", d.lower())} - set(train_counts)
    assert held_only, "the corpus split should leave some held-out-only words"
    assert not held_only & set(keyword_vocabulary())


@pytest.mark.parametrize(
    "config, error",
    [
        ({"source": "nope"}, "unknown source"),
        ({"source": "keyword-practice", "n": 0}, "positive integer"),
        ({"source": "keyword-practice", "count": 5}, "unknown key"),
        (["keyword-practice"], "table"),
    ],
)
def test_bad_practice_config_is_refused(config, error) -> None:
    with pytest.raises((ValueError, TypeError), match=error):
        check_practice_config(config)
    with pytest.raises((ValueError, TypeError), match=error):
        RunSpec(env_id=KW_SEQ, agent="grpo", train_prompts=config)


def test_a_suite_train_prompts_that_is_not_a_table_is_refused_by_name() -> None:
    suite = {
        "agents": {"grpo-practice": {"agent": "grpo", "train_prompts": "keyword-practice"}},
        "runs": [{"envs": [KW_SEQ], "agents": ["grpo-practice"]}],
    }
    with pytest.raises(TypeError, match="train_prompts must be a table"):
        expand_suite(suite, seeds=1, steps=64, device="cpu")


def test_practice_source_of_another_task_is_refused() -> None:
    with pytest.raises(ValueError, match="Keywords prompts; this env's task is 'Sentiment'"):
        practice_rows(PRACTICE, "Sentiment")


def test_harness_trains_on_practice_prompts_and_evaluates_on_the_test_split() -> None:
    suite = {
        "agents": {"grpo-practice": {"agent": "grpo", "train_prompts": PRACTICE}, "grpo": {}},
        "runs": [{"envs": [KW_SEQ], "agents": ["grpo-practice", "grpo"]}],
    }
    specs = {s.agent: s for s in expand_suite(suite, seeds=1, steps=64, device="cpu")}
    spec = specs["grpo-practice"]
    assert spec.train_prompts == PRACTICE and "train_prompts" not in spec.agent_kwargs
    assert specs["grpo"].train_prompts is None
    assert spec.fingerprint() != specs["grpo"].fingerprint()
    train = make_train_env(spec).unwrapped.runtime
    assert [r["prompt"] for r in train.rows] == [r["prompt"] for r in keyword_practice_rows(200, seed=0)]
    test = make_test_env(spec).unwrapped.runtime
    assert test.rows == load_prompt_rows(get_task("Keywords"), split="test")
    plain = make_train_env(specs["grpo"]).unwrapped.runtime
    assert plain.rows == load_prompt_rows(get_task("Keywords"), split="train")


def test_warm_start_on_practice_prompts_uses_the_task_train_demonstrations() -> None:
    import gymnasium as gym

    from aligngym.agents.sft import demonstrations, warm_start_demonstrations

    practice = gym.make(KW_SEQ, prompts=keyword_practice_rows(50)).unwrapped.runtime
    train = gym.make(KW_SEQ, split="train").unwrapped.runtime
    assert warm_start_demonstrations(practice) == demonstrations(train)
    test_refs = {r["reference"] for r in load_prompt_rows(get_task("Keywords"), split="test")}
    assert not test_refs & {c.strip() for _, c in warm_start_demonstrations(practice)}
    sentiment = gym.make("aligngym/Sentiment-Sequence-v0").unwrapped.runtime
    with pytest.raises(ValueError, match="no demonstrations"):
        warm_start_demonstrations(sentiment)


@pytest.mark.parametrize("config_cls", ["grpo", "ppo"])
def test_rl_warm_start_corpus_demonstrations_is_checked(config_cls) -> None:
    from aligngym.agents.grpo import GRPOConfig
    from aligngym.agents.ppo import PPOConfig

    cls = GRPOConfig if config_cls == "grpo" else PPOConfig
    assert cls(sft_steps=10, sft_corpus_demonstrations=100).sft_corpus_demonstrations == 100
    with pytest.raises(ValueError, match="sft_corpus_demonstrations"):
        cls(sft_corpus_demonstrations=-1)


def test_grpo_warm_start_passes_corpus_demonstrations(monkeypatch) -> None:
    import gymnasium as gym

    import aligngym.agents.sft as sft
    from aligngym.agents.grpo import GRPOAgent, GRPOConfig

    seen: list[int] = []
    real = sft.SFTTrainer

    def spy(policy, tokenizer, config, pairs=None, **kwargs):
        seen.append(len(pairs))
        return real(policy, tokenizer, config, pairs=pairs, **kwargs)

    monkeypatch.setattr(sft, "SFTTrainer", spy)
    env = gym.make(KW_SEQ, prompts=keyword_practice_rows(20), gold=False)
    cfg = GRPOConfig(
        sft_steps=1, sft_corpus_demonstrations=30, num_generations=2, prompts_per_update=2, seed=0
    )
    agent = GRPOAgent(env, cfg)
    agent.learn(4)
    n_train = len(sft.demonstrations(gym.make(KW_SEQ, split="train").unwrapped.runtime))
    assert seen == [n_train + 30]


def test_linked_rows_hang_together_but_no_train_line_holds_all_three() -> None:
    from aligngym.agents.practice_prompts import _train_line_words, keyword_linked_rows

    rows = keyword_linked_rows(200, seed=1)
    assert rows == keyword_linked_rows(200, seed=1)
    lines = [set(ws) for ws in _train_line_words()]
    task_sets = {frozenset(r["keywords"]) for r in load_prompt_rows(get_task("Keywords"), split="all")}
    vocab = set(keyword_vocabulary())
    for r in rows:
        kw = set(r["keywords"])
        assert len(kw) == 3 and kw <= vocab and frozenset(kw) not in task_sets
        assert not any(kw <= line for line in lines), r  # no recall possible
        assert sum(len(kw & line) >= 2 for line in lines) >= 2, r  # pairs of them do co-occur


def test_train_share_mixes_in_the_task_train_rows_only() -> None:
    rows = practice_rows({**PRACTICE, "n": 600, "train_share": 0.25}, "Keywords")
    train = load_prompt_rows(get_task("Keywords"), split="train")
    mixed = [r for r in rows if "reference" in r]
    assert 0.2 <= len(mixed) / len(rows) <= 0.3
    assert {r["prompt"] for r in mixed} == {r["prompt"] for r in train}
    assert rows[:600] == keyword_practice_rows(600, seed=0)
    with pytest.raises(ValueError, match="train_share"):
        check_practice_config({**PRACTICE, "train_share": 1.0})
