"""Checkpoint writes are atomic: a save stopped at any point leaves a loadable checkpoint (the previous one, or the
new one completed), and a torn or truncated file is refused with CheckpointError, never loaded."""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents import base
from aligngym.agents.base import CONFIG_FILE, WEIGHTS_FILE, CheckpointError
from aligngym.agents.tabular import QLearningAgent, QLearningConfig

TARGET = "aligngym/Target-Token-v0"


def _agent(steps: int) -> QLearningAgent:
    return QLearningAgent(gym.make(TARGET), QLearningConfig(seed=0)).learn(steps)


def _table(agent: QLearningAgent) -> np.ndarray:
    return agent.table.values[: agent.table.size].copy()


@pytest.fixture(scope="module")
def two_agents() -> tuple[QLearningAgent, QLearningAgent]:
    return _agent(200), _agent(600)


def test_a_save_leaves_exactly_the_two_files(two_agents, tmp_path: Path) -> None:
    path = two_agents[0].save(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]


@pytest.mark.parametrize("name", [WEIGHTS_FILE, CONFIG_FILE])
def test_a_file_truncated_at_any_offset_is_refused(two_agents, tmp_path: Path, name: str) -> None:
    path = two_agents[0].save(tmp_path / "ckpt")
    full = (path / name).read_bytes()
    for cut in sorted({0, 1, 8, len(full) // 3, len(full) // 2, len(full) - 1}):
        (path / name).write_bytes(full[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupted"):
            QLearningAgent.load(path, gym.make(TARGET))
    (path / name).write_bytes(full)
    assert QLearningAgent.load(path, gym.make(TARGET)).table.size == two_agents[0].table.size


def test_a_flipped_byte_in_the_weights_is_refused(two_agents, tmp_path: Path) -> None:
    path = two_agents[0].save(tmp_path / "ckpt")
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        QLearningAgent.load(path, gym.make(TARGET))


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize("crash_at_rename", [1, 2])
def test_a_save_interrupted_at_a_rename_leaves_a_loadable_checkpoint(
    two_agents, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at_rename: int
) -> None:
    old, new = two_agents
    path = old.save(tmp_path / "ckpt")
    calls = {"n": 0}
    real_replace = os.replace

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == crash_at_rename:
            raise _Crash("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(base.os, "replace", replace)
    with pytest.raises(_Crash):
        new.save(path)
    monkeypatch.setattr(base.os, "replace", real_replace)
    loaded = QLearningAgent.load(path, gym.make(TARGET))
    # before the weights moved: the previous checkpoint; between the renames: the new one, completed on read
    want = old if crash_at_rename == 1 else new
    np.testing.assert_array_equal(_table(loaded), _table(want))
    assert loaded.num_timesteps == want.num_timesteps


@pytest.mark.parametrize("torn", [WEIGHTS_FILE, CONFIG_FILE])
def test_a_save_torn_while_writing_keeps_the_previous_checkpoint(
    two_agents, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torn: str
) -> None:
    old, new = two_agents
    path = old.save(tmp_path / "ckpt")
    real_write = base._write_durably

    def write(target: Path, data: bytes) -> None:
        if target.name == torn + ".tmp":
            target.write_bytes(data[: len(data) // 2])
            raise _Crash("killed mid-write")
        real_write(target, data)

    monkeypatch.setattr(base, "_write_durably", write)
    with pytest.raises(_Crash):
        new.save(path)
    loaded = QLearningAgent.load(path, gym.make(TARGET))
    np.testing.assert_array_equal(_table(loaded), _table(old))
    monkeypatch.setattr(base, "_write_durably", real_write)
    new.save(path)  # the next save cleans the leftovers up
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    np.testing.assert_array_equal(_table(QLearningAgent.load(path, gym.make(TARGET))), _table(new))
