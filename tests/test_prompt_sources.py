"""Prompt sources: ``prompts=`` / ``prompt_file=`` take a ``datasets.Dataset``, a saved dataset directory, a Parquet
file or a JSONL file, and every source gives the same episodes for the same rows and seed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import aligngym.envs  # noqa: F401
from aligngym.envs.data import data_path
from aligngym.envs.prompts import load_prompt_rows, read_jsonl
from aligngym.envs.tasks import get_task

datasets = pytest.importorskip("datasets")

KEYWORDS_SEQ = "aligngym/Keywords-Sequence-v0"
KEYWORDS_TOKEN = "aligngym/Keywords-Token-v0"
JSONL = data_path("keywords.jsonl")


def episodes(env: gym.Env, seed: int, n: int = 6) -> list[tuple[Any, ...]]:
    """(prompt ids, completion, reward, score components) of n episodes under a seeded action stream."""
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    out = []
    for _ in range(n):
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            done = terminated or truncated
        out.append(
            (obs["input_ids"].tolist(), info["prompt"], info["completion"], reward, info["reward_components"])
        )
        obs, info = env.reset()
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("prompt_sources")
    ds = datasets.Dataset.from_list(read_jsonl(JSONL))
    ds.save_to_disk(str(tmp / "saved"))
    ds.to_parquet(str(tmp / "keywords.parquet"))
    return {
        "dataset": {"prompts": ds},
        "saved directory": {"prompt_file": str(tmp / "saved")},
        "saved directory as prompts": {"prompts": tmp / "saved"},
        "parquet": {"prompt_file": tmp / "keywords.parquet"},
        "parquet as prompts": {"prompts": str(tmp / "keywords.parquet")},
    }


@pytest.mark.parametrize(
    "source",
    ["dataset", "saved directory", "saved directory as prompts", "parquet", "parquet as prompts"],
)
@pytest.mark.parametrize("env_id", [KEYWORDS_SEQ, KEYWORDS_TOKEN])
def test_dataset_round_trip_gives_the_same_episodes_as_the_jsonl_file(
    env_id: str, source: str, sources: dict[str, Any]
) -> None:
    kw = {"gold": False, "max_new_tokens": 4}
    want = episodes(gym.make(env_id, prompt_file=str(JSONL), **kw), seed=11)
    got = episodes(gym.make(env_id, **sources[source], **kw), seed=11)
    assert got == want


def test_columns_other_than_prompt_become_context_and_split_filters_rows() -> None:
    ds = datasets.Dataset.from_list(read_jsonl(JSONL))
    task = get_task("Keywords")
    for split in ("train", "test"):
        rows = load_prompt_rows(task, prompts=ds, split=split)
        assert rows == load_prompt_rows(task, split=split)
        assert {k for r in rows for k in r} == {"prompt", "keywords", "reference", "split"}
    assert len(load_prompt_rows(task, prompts=ds, split="all")) == len(ds)
    env = gym.make(KEYWORDS_SEQ, prompts=ds, gold=False)
    assert env.unwrapped.runtime.context_keys == ["keywords", "reference"]


def test_dataset_dict_gives_the_split_asked_for() -> None:
    rows = read_jsonl(JSONL)
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([r for r in rows if r["split"] == "train"]),
            "test": datasets.Dataset.from_list([r for r in rows if r["split"] == "test"]),
        }
    )
    task = get_task("Keywords")
    assert load_prompt_rows(task, prompts=dd, split="test") == load_prompt_rows(task, split="test")
    assert len(load_prompt_rows(task, prompts=dd, split="all")) == len(rows)
    with pytest.raises(ValueError, match="splits"):
        load_prompt_rows(task, prompts=datasets.DatasetDict({"validation": dd["test"]}), split="test")


def test_a_dataset_without_split_or_with_plain_prompts_works() -> None:
    ds = datasets.Dataset.from_dict({"prompt": ["The soup was", "Our trip"], "topic": ["food", "travel"]})
    env = gym.make("aligngym/Text-Token-v0", prompts=ds, scorer="sentiment")
    rt = env.unwrapped.runtime
    assert [r["prompt"] for r in rt.rows] == ["The soup was", "Our trip"]
    assert rt.context_keys == ["topic"]


def test_bad_sources_raise_clear_errors(tmp_path: Path) -> None:
    task = get_task("Text")
    with pytest.raises(FileNotFoundError, match=r"missing\.parquet"):
        load_prompt_rows(task, prompts=str(tmp_path / "missing.parquet"))
    with pytest.raises(TypeError, match="list of prompts"):
        load_prompt_rows(task, prompts="one string")
    (tmp_path / "prompts.csv").write_text("prompt\nhello\n")
    with pytest.raises(ValueError, match="JSONL"):
        load_prompt_rows(task, prompt_file=tmp_path / "prompts.csv")
    no_prompt = datasets.Dataset.from_dict({"text": ["x"]})
    with pytest.raises(ValueError, match="no 'prompt' field"):
        load_prompt_rows(task, prompts=no_prompt)
    with pytest.raises(ValueError, match="not both"):
        load_prompt_rows(task, prompts=no_prompt, prompt_file=JSONL)


def test_a_saved_directory_without_datasets_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    datasets.Dataset.from_dict({"prompt": ["a"]}).save_to_disk(str(tmp_path / "saved"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    with pytest.raises(ImportError, match=r"aligngym\[datasets\]"):
        load_prompt_rows(get_task("Text"), prompt_file=tmp_path / "saved")


def test_jsonl_and_list_sources_still_work_without_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert load_prompt_rows(get_task("Keywords"), prompt_file=JSONL, split="all") == read_jsonl(JSONL)
    assert load_prompt_rows(get_task("Text"), prompts=["a", {"prompt": "b", "x": 1}]) == [
        {"prompt": "a"},
        {"prompt": "b", "x": 1},
    ]
