"""Curricula over difficulty levels: a wrapper that moves the level to hold a target success rate, or follows a
fixed schedule.

:class:`Curriculum` wraps any env whose ``reset(options={"difficulty": k})`` sets the level (the procedural and
reasoning envs); it reports the level in ``info["difficulty"]`` and its state in ``info["curriculum"]``.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

#: ``schedule(env_steps, episodes) -> level`` for a fixed schedule given as a function
ScheduleFn = Callable[[int, int], int]


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


class CurriculumController:
    """The level and the success record a :class:`Curriculum` keeps; shared by deep copies of the wrapper.

    Agents that run a single env as several copies (``copy.deepcopy``, as ``ReinforceAgent`` does for a
    ``SyncVectorEnv``) then move one curriculum with the episodes of all copies; a pickled copy (another process)
    gets its own controller.

    :param min_level: the lowest level.
    :param max_level: the highest level.
    :param level: the starting level.
    :param target_success: adaptive mode: move up when the success rate over the last ``window`` episodes at this
        level is at least this.
    :param hysteresis: adaptive mode: move down when the rate is below ``target_success - hysteresis``.
    :param window: episodes at a level per judgement (tumbling windows: the record restarts after each judgement
        and after every move).
    :param schedule: fixed mode: ``[(env_step, level), ...]`` (level from that step on; sorted by step) or a
        function ``schedule(env_steps, episodes) -> level``; ``None`` for adaptive mode.
    """

    def __init__(
        self,
        min_level: int,
        max_level: int,
        level: int,
        target_success: float = 0.7,
        hysteresis: float = 0.5,
        window: int = 32,
        schedule: Sequence[tuple[int, int]] | ScheduleFn | None = None,
    ) -> None:
        for name, value in (("min_level", min_level), ("max_level", max_level), ("level", level)):
            if not _is_int(value):
                raise TypeError(f"{name} must be an integer, got {value!r}")
        if not min_level <= level <= max_level:
            raise ValueError(f"level must be in [{min_level}, {max_level}], got {level}")
        if not 0.0 < target_success <= 1.0:
            raise ValueError(f"target_success must be in (0, 1], got {target_success!r}")
        if not 0.0 <= hysteresis <= target_success:
            raise ValueError(
                f"hysteresis must be in [0, target_success={target_success}], got {hysteresis!r}"
            )
        if not _is_int(window) or window <= 0:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.min_level, self.max_level = int(min_level), int(max_level)
        self.level = int(level)
        self.target_success = float(target_success)
        self.hysteresis = float(hysteresis)
        self.window = int(window)
        self.schedule = self._check_schedule(schedule)
        self.record: deque[bool] = deque(maxlen=self.window)
        self.env_steps = 0
        self.episodes = 0
        self.moves: list[tuple[int, int]] = []  # (env_step, new level)
        self.highest_level = self.level
        self.mastered = 0  # the highest level with a full window at >= target_success (0: none yet)

    def _check_schedule(
        self, schedule: Sequence[tuple[int, int]] | ScheduleFn | None
    ) -> list[tuple[int, int]] | ScheduleFn | None:
        if schedule is None or callable(schedule):
            return schedule
        pairs = [tuple(p) for p in schedule]
        if not pairs:
            raise ValueError("schedule is empty; give [(env_step, level), ...] or a function")
        for p in pairs:
            if len(p) != 2 or not all(_is_int(x) for x in p):
                raise ValueError(f"schedule entries must be (env_step, level) integer pairs, got {p!r}")
            if not self.min_level <= p[1] <= self.max_level:
                raise ValueError(f"schedule level {p[1]} outside [{self.min_level}, {self.max_level}]")
        steps = [p[0] for p in pairs]
        if steps != sorted(steps) or steps[0] != 0:
            raise ValueError(f"schedule steps must be sorted and start at 0, got {steps}")
        return [(int(a), int(b)) for a, b in pairs]

    @property
    def mode(self) -> str:
        return "adaptive" if self.schedule is None else "schedule"

    @property
    def success_rate(self) -> float | None:
        """Success rate of the current, unfinished window (``None`` when it is empty)."""
        return float(np.mean(self.record)) if self.record else None

    def _scheduled_level(self) -> int:
        if callable(self.schedule):
            level = self.schedule(self.env_steps, self.episodes)
            if not _is_int(level) or not self.min_level <= level <= self.max_level:
                raise ValueError(
                    f"schedule returned {level!r} at step {self.env_steps}; expected a level in "
                    f"[{self.min_level}, {self.max_level}]"
                )
            return int(level)
        assert self.schedule is not None
        level = self.schedule[0][1]
        for step, lv in self.schedule:
            if step <= self.env_steps:
                level = lv
        return level

    def _move(self, level: int) -> None:
        if level != self.level:
            self.level = level
            self.record.clear()
            self.moves.append((self.env_steps, level))
            self.highest_level = max(self.highest_level, level)

    def on_step(self) -> None:
        self.env_steps += 1

    def on_episode_end(self, success: bool, level: int | None = None) -> None:
        """Record an episode and move the level if the rule says so.

        :param level: the level the episode was played at; an episode of another level than the current one (it
            started before the last move, in another copy of the env) is counted but not recorded.
        """
        self.episodes += 1
        if level is not None and level != self.level:
            return
        self.record.append(bool(success))
        if len(self.record) < self.window:
            return
        rate = float(np.mean(self.record))
        self.record.clear()  # tumbling windows: each episode is judged once
        if rate >= self.target_success:
            self.mastered = max(self.mastered, self.level)
        if self.schedule is not None:
            return
        if rate >= self.target_success and self.level < self.max_level:
            self._move(self.level + 1)
        elif rate < self.target_success - self.hysteresis and self.level > self.min_level:
            self._move(self.level - 1)

    def level_for_next_episode(self) -> int:
        """The level the next episode is played at (a fixed schedule is read here)."""
        if self.schedule is not None:
            self._move(self._scheduled_level())
        return self.level

    def state(self) -> dict[str, Any]:
        """What ``info["curriculum"]`` shows."""
        return {
            "mode": self.mode,
            "level": self.level,
            "highest_level": self.highest_level,
            "mastered": self.mastered,
            "success_rate": self.success_rate,
            "episodes": self.episodes,
            "env_steps": self.env_steps,
        }

    def __deepcopy__(self, memo: dict[int, Any]) -> CurriculumController:
        return self  # copies of one wrapper share one curriculum (see the class docstring)


def default_success(info: dict[str, Any], threshold: float = 1.0) -> bool:
    """An episode succeeded when its final ``info["score"]`` reaches ``threshold`` (exact checkers pay 1.0)."""
    score = info.get("score")
    return score is not None and float(score) >= threshold - 1e-9


class Curriculum(gym.Wrapper[Any, Any, Any, Any]):
    """Move an env's difficulty to hold a target success rate, or along a fixed schedule.

    Before every episode the wrapper passes ``options={"difficulty": level}`` to the env's ``reset``; after every
    episode it records success (``success_fn(final_info)``, default: ``info["score"] >= 1.0``). Adaptive mode moves
    up one level when the last ``window`` episodes at a level succeed at least ``target_success`` of the time, and
    down one when they fall below ``target_success - hysteresis``. ``info["difficulty"]`` is the level of the
    episode, ``info["curriculum"]`` the controller's state.

    ``Curriculum(gym.make("aligngym/Copy-Token-v0", max_difficulty=5), target_success=0.7)`` or, with a fixed
    schedule, ``Curriculum(env, schedule=[(0, 1), (5000, 2), (10000, 3)])`` (env step -> level).

    :param env: an env whose reset takes ``options={"difficulty": k}``; its ``unwrapped.max_difficulty`` (when it
        has one) is the default ``max_level``.
    :param target_success: see :class:`CurriculumController`.
    :param hysteresis: see :class:`CurriculumController`.
    :param window: see :class:`CurriculumController`.
    :param schedule: see :class:`CurriculumController`; ``None`` for the adaptive rule.
    :param min_level: lowest level (default 1).
    :param max_level: highest level (default: the env's ``max_difficulty``).
    :param start_level: first level (default ``min_level``).
    :param success_fn: ``success_fn(final_info) -> bool``.
    """

    def __init__(
        self,
        env: gym.Env[Any, Any],
        target_success: float = 0.7,
        *,
        hysteresis: float = 0.5,
        window: int = 32,
        schedule: Sequence[tuple[int, int]] | ScheduleFn | None = None,
        min_level: int = 1,
        max_level: int | None = None,
        start_level: int | None = None,
        success_fn: Callable[[dict[str, Any]], bool] = default_success,
    ) -> None:
        super().__init__(env)
        if max_level is None:
            max_level = getattr(env.unwrapped, "max_difficulty", None)
            if max_level is None:
                raise ValueError(
                    f"{type(env.unwrapped).__name__} has no max_difficulty; pass max_level= to Curriculum"
                )
        if max_level <= min_level:
            raise ValueError(
                f"a curriculum needs at least two levels, got min_level={min_level}, max_level={max_level}: build "
                "the env with max_difficulty > 1 (gym.make(id, max_difficulty=5))"
            )
        if not callable(success_fn):
            raise TypeError(f"success_fn must be callable, got {type(success_fn).__name__}")
        self.controller = CurriculumController(
            min_level,
            max_level,
            min_level if start_level is None else start_level,
            target_success=target_success,
            hysteresis=hysteresis,
            window=window,
            schedule=schedule,
        )
        self.success_fn = success_fn
        self._level = self.controller.level

    @property
    def level(self) -> int:
        """The level the current (or next) episode is played at."""
        return self._level

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        self._level = self.controller.level_for_next_episode()
        options = {**(options or {}), "difficulty": self._level}
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, self._tag(info)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.controller.on_step()
        if terminated or truncated:
            self.controller.on_episode_end(bool(self.success_fn(info)), self._level)
        return obs, reward, terminated, truncated, self._tag(info)

    def _tag(self, info: dict[str, Any]) -> dict[str, Any]:
        info = dict(info)
        info["difficulty"] = self._level
        info["curriculum"] = self.controller.state()
        return info


def make_curriculum_vec(
    env_id: str,
    num_envs: int,
    env_kwargs: dict[str, Any] | None = None,
    **curriculum_kwargs: Any,
) -> gym.vector.SyncVectorEnv:
    """``num_envs`` copies of ``Curriculum(gym.make(env_id, **env_kwargs), **curriculum_kwargs)`` in a
    ``SyncVectorEnv``, all moved by one :class:`CurriculumController` (the episodes of every copy count).

    The native vector env runs at a fixed level; this is the vector form of a curriculum. Each copy reports its
    episode's level in ``info["difficulty"]`` (batched by ``SyncVectorEnv``).

    :param env_id: an id whose env takes ``options={"difficulty": k}`` (``"aligngym/Count-Token-v0"``).
    :param num_envs: copies.
    :param env_kwargs: ``gym.make`` keyword arguments (e.g. ``{"max_difficulty": 4}``).
    :param curriculum_kwargs: :class:`Curriculum`'s arguments (``target_success``, ``window``, ``schedule``...).
    """
    if not _is_int(num_envs) or num_envs <= 0:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    first = Curriculum(gym.make(env_id, **(env_kwargs or {})), **curriculum_kwargs)
    copies = [first] + [copy.deepcopy(first) for _ in range(num_envs - 1)]
    return gym.vector.SyncVectorEnv([_Returning(e) for e in copies])


class _Returning:
    """A picklable env factory that returns one already built env."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        self.env = env

    def __call__(self) -> gym.Env[Any, Any]:
        return self.env


#: the keys of a curriculum given as a plain dict (a benchmark suite's ``curriculum = {...}`` table)
CONFIG_KEYS = ("target_success", "hysteresis", "window", "schedule", "min_level", "max_level", "start_level")


def check_curriculum_config(config: dict[str, Any]) -> None:
    """Refuse a curriculum dict with unknown keys or a ``schedule`` that is not ``"linear"`` or ``[[step, level], ...]``.

    :param config: the dict :func:`curriculum_from_config` takes.
    :raises TypeError: when ``config`` is not a dict.
    :raises ValueError: unknown keys, or a bad ``schedule``.
    """
    if not isinstance(config, dict):
        raise TypeError(f"a curriculum config must be a dict (a TOML table), got {type(config).__name__}")
    unknown = set(config) - set(CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown curriculum key(s) {sorted(unknown)}; expected some of {list(CONFIG_KEYS)}")
    schedule = config.get("schedule")
    if schedule is None or schedule == "linear":
        return
    if isinstance(schedule, str) or not isinstance(schedule, Sequence):
        raise ValueError(
            f'curriculum schedule must be "linear" or a list of [env_step, level] pairs, got {schedule!r}'
        )


def curriculum_from_config(
    env: gym.Env[Any, Any], config: dict[str, Any], total_steps: int | None = None
) -> Curriculum:
    """``Curriculum(env, ...)`` from a plain dict (what a benchmark suite's ``curriculum = {...}`` table holds).

    ``{"target_success": 0.7, "window": 32}`` is the adaptive rule; ``{"schedule": "linear"}`` a fixed schedule that
    spends ``total_steps / levels`` env steps on each level (:func:`linear_schedule`); ``{"schedule": [[0, 1],
    [4000, 2]]}`` an explicit one.

    :param env: the env to wrap (see :class:`Curriculum`).
    :param config: keys of :data:`CONFIG_KEYS`.
    :param total_steps: the training budget in env steps (needed by ``schedule = "linear"``).
    :raises ValueError: unknown keys, a bad schedule, or ``"linear"`` without ``total_steps``.
    """
    check_curriculum_config(config)
    kwargs = dict(config)
    schedule = kwargs.pop("schedule", None)
    if schedule == "linear":
        if total_steps is None or total_steps <= 0:
            raise ValueError(f'schedule "linear" needs the training budget, got total_steps={total_steps!r}')
        min_level = int(kwargs.get("min_level", 1))
        max_level = kwargs.get("max_level", getattr(env.unwrapped, "max_difficulty", None))
        if max_level is None:
            raise ValueError(
                f"{type(env.unwrapped).__name__} has no max_difficulty; give max_level in the curriculum config"
            )
        schedule = linear_schedule(int(total_steps), min_level, int(max_level))
    elif schedule is not None:
        schedule = [tuple(pair) for pair in schedule]
    return Curriculum(env, schedule=schedule, **kwargs)


def find_curriculum(env: Any) -> Curriculum | None:
    """The :class:`Curriculum` wrapper in ``env``'s wrapper chain, or ``None``."""
    while env is not None:
        if isinstance(env, Curriculum):
            return env
        env = getattr(env, "env", None)
    return None


def linear_schedule(total_steps: int, min_level: int, max_level: int) -> list[tuple[int, int]]:
    """A fixed schedule that spends ``total_steps / (levels)`` env steps on each level, easiest first."""
    if not _is_int(total_steps) or total_steps <= 0:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    n = max_level - min_level + 1
    if n <= 0:
        raise ValueError(f"max_level={max_level} is below min_level={min_level}")
    return [(round(k * total_steps / n), min_level + k) for k in range(n)]


__all__ = [
    "CONFIG_KEYS",
    "Curriculum",
    "CurriculumController",
    "ScheduleFn",
    "check_curriculum_config",
    "curriculum_from_config",
    "default_success",
    "find_curriculum",
    "linear_schedule",
    "make_curriculum_vec",
]
