"""Procedural verifiable tasks as envs: ``aligngym/Copy-Token-v0``, ``aligngym/Arithmetic-Sequence-v0``, ...

Each family of :mod:`aligngym.envs.procedural_tasks` becomes a token- and a sequence-level env over the ordinary
:class:`~aligngym.envs.core.TaskRuntime`: its instances are the prompt rows, its exact checker the scorer. An env
takes ``difficulty=`` (1 = easiest) and can move between levels (``reset(options={"difficulty": k})``), which is
what :class:`~aligngym.envs.curriculum.Curriculum` does.
"""

from __future__ import annotations

import inspect
from typing import Any, SupportsFloat

import numpy as np

from aligngym.envs.core import SequenceEnv, TaskRuntime, TokenEnv
from aligngym.envs.procedural_tasks import (
    FAMILIES,
    MAX_LEVEL,
    Family,
    ProceduralScorer,
    get_family,
    instance_rows,
)
from aligngym.envs.tasks import Task

#: options the procedural envs set themselves from the family and level
_OWN_OPTIONS = ("prompts", "prompt_file")
DEFAULT_NUM_INSTANCES = 1000


def _level(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= int(value) <= MAX_LEVEL:
        raise ValueError(f"{name} must be an integer in [1, {MAX_LEVEL}], got {value!r}")
    return int(value)


class ProceduralSpec:
    """The resolved procedural options of an env: family, levels, split, instance pool, and the runtime options.

    :param task: family name (``"copy"``, ``"reverse"``, ``"sort"``, ``"count"``, ``"compare"``, ``"arithmetic"``,
        ``"list_format"``) or a :class:`~aligngym.envs.procedural_tasks.Family`.
    :param difficulty: the starting level, 1 (easiest) to 5.
    :param max_difficulty: the highest level the env may move to (default: ``difficulty``). The action vocabulary
        and the token budget are those of this level, so the spaces stay the same at every level up to it.
    :param split: ``"train"``, ``"test"`` (instances disjoint from train, decided by a hash of the prompt) or
        ``"all"``.
    :param heldout: ``False`` makes ``split="test"`` use the train instances (for memorising agents such as tabular
        Q-learning, which cannot generalise to unseen prompts; the harness evaluates on ``split="test"``).
    :param num_instances: at most this many instances per level (the whole level when it has fewer).
    :param instance_seed: which instances are drawn when a level has more than ``num_instances``.
    :param reward: ``"exact"`` (1.0 for a right answer) or ``"partial"`` (positional credit, 1.0 only when right).
    :param options: the other :class:`~aligngym.envs.core.TaskRuntime` options (``tokenizer``, ``max_new_tokens``,
        ``action_vocab``, ``scorer``, ...); ``prompts`` / ``prompt_file`` are refused (the family makes them).
    """

    def __init__(
        self,
        task: str | Family = "copy",
        difficulty: int = 1,
        *,
        max_difficulty: int | None = None,
        split: str = "train",
        heldout: bool = True,
        num_instances: int = DEFAULT_NUM_INSTANCES,
        instance_seed: int = 0,
        reward: str = "exact",
        **options: Any,
    ) -> None:
        self.family = get_family(task)
        self.difficulty = _level("difficulty", difficulty)
        self.max_difficulty = (
            self.difficulty if max_difficulty is None else _level("max_difficulty", max_difficulty)
        )
        if self.max_difficulty < self.difficulty:
            raise ValueError(f"max_difficulty={self.max_difficulty} is below difficulty={self.difficulty}")
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        given = [k for k in _OWN_OPTIONS if options.get(k) is not None]
        if given:
            raise TypeError(
                f"procedural task {self.family.name!r} makes its own prompts; do not pass {given} "
                "(use aligngym/Text-Token-v0 for a prompt set of your own)"
            )
        self.split = split
        self.instance_split = "train" if (split == "test" and not heldout) else split
        self.num_instances = num_instances
        self.instance_seed = instance_seed
        fam, top = self.family, self.max_difficulty
        self.task = Task(
            name=fam.title,
            description=fam.description,
            prompt_file=None,
            scorer=None,
            max_prompt_tokens=fam.max_prompt_tokens,
            max_new_tokens=fam.horizon(top),
        )
        checker = ProceduralScorer(reward)
        defaults: dict[str, Any] = {"scorer": checker, "split": split}
        if "gold" in inspect.signature(TaskRuntime.__init__).parameters:
            defaults["gold"] = ProceduralScorer("exact")  # the ground truth is the checker itself
        self.options = {**defaults, **{k: v for k, v in options.items() if k not in _OWN_OPTIONS}}
        if self.options.get("action_vocab") is None:
            self.options["action_vocab"] = list(fam.actions(top))  # EOS is appended by :meth:`runtime`

    def rows(self, level: int) -> list[dict[str, Any]]:
        """The prompt rows of ``level`` in this env's split."""
        return instance_rows(self.family, level, self.instance_split, self.num_instances, self.instance_seed)

    def runtime(self, level: int, tokenizer: Any = None) -> TaskRuntime:
        """A :class:`TaskRuntime` on ``level``'s instances (``tokenizer`` shares an already loaded one)."""
        options = dict(self.options)
        if tokenizer is not None:
            options["tokenizer"] = tokenizer
        return TaskRuntime(self.task, prompts=self.rows(level), **options)

    def runtime_options(self, level: int) -> dict[str, Any]:
        """``task`` and the options that build the runtime of ``level`` (what a vector env takes)."""
        return {"task": self.task, "prompts": self.rows(level), **self.options}


def _with_eos(spec: ProceduralSpec, tokenizer: Any) -> None:
    """Append the tokenizer's EOS to the family's default action vocabulary (a user's vocabulary is kept as is)."""
    vocab = spec.options["action_vocab"]
    eos = tokenizer.eos_id
    if eos is not None and list(vocab) == list(spec.family.actions(spec.max_difficulty)):
        spec.options["action_vocab"] = [*vocab, int(eos)]


class _ProceduralEnv:
    """What the token- and sequence-level procedural envs share: levels, level switching, ``info["difficulty"]``."""

    runtime: TaskRuntime
    procedural: ProceduralSpec
    _runtimes: dict[int, TaskRuntime]
    difficulty: int

    def _build(self, task: str | Family, difficulty: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        from aligngym.envs.tokenization import load_tokenizer

        self.procedural = ProceduralSpec(task, difficulty, **kwargs)
        tokenizer = load_tokenizer(self.procedural.options.pop("tokenizer", None))
        _with_eos(self.procedural, tokenizer)
        self.procedural.options["tokenizer"] = tokenizer
        self.difficulty = self.procedural.difficulty
        return {"prompts": self.procedural.rows(self.difficulty), **self.procedural.options}

    @property
    def max_difficulty(self) -> int:
        return self.procedural.max_difficulty

    def set_difficulty(self, level: int) -> None:
        """Move to ``level`` (1..``max_difficulty``); takes effect at the next ``reset``."""
        if isinstance(level, bool) or not isinstance(level, int | np.integer) or level < 1:
            raise ValueError(f"difficulty must be a positive integer, got {level!r}")
        level = int(level)
        if level > self.procedural.max_difficulty:
            raise ValueError(
                f"difficulty {level} is above max_difficulty={self.procedural.max_difficulty}; build the env with "
                f"max_difficulty={level} (or more) to use it"
            )
        if level not in self._runtimes:
            self._runtimes[level] = self.procedural.runtime(level, tokenizer=self.runtime.tokenizer)
        self.difficulty = level
        self.runtime = self._runtimes[level]

    def _reset_options(self, options: dict[str, Any] | None) -> dict[str, Any] | None:
        if options and "difficulty" in options:
            options = dict(options)
            self.set_difficulty(options.pop("difficulty"))
        return options

    def _tag(self, info: dict[str, Any]) -> dict[str, Any]:
        info["difficulty"] = self.difficulty
        return info

    # reset/step for both granularities: super() is TokenEnv or SequenceEnv (the mixin comes first in the MRO)
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=self._reset_options(options))  # type: ignore[misc]
        return obs, self._tag(info)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)  # type: ignore[misc]
        return obs, reward, terminated, truncated, self._tag(info)


class ProceduralTokenEnv(_ProceduralEnv, TokenEnv):
    """Token-level procedural task: write the answer one token at a time; the exact checker pays at the end.

    ## Description
    A generated instance of a family of :mod:`aligngym.envs.procedural_tasks` (copy, reverse, sort, count, compare,
    arithmetic, list_format) at a ``difficulty`` level (1 = easiest, 5 = hardest), drawn with ``np_random`` from the
    level's pool; ``split="test"`` draws from instances disjoint from ``split="train"`` (a hash of the prompt
    decides).

    ## Action Space
    ``Discrete(k)``: the family's tokens at ``max_difficulty`` (colour words, digits, a comma) plus EOS; a different
    ``action_vocab=`` may be given.

    ## Observation Space
    As :class:`~aligngym.envs.core.TokenEnv`: ``Dict(input_ids, attention_mask)`` of length 16 + the budget.

    ## Rewards
    At the end: 1.0 for a right answer, else 0.0 (``reward="partial"``: positional credit per word or digit, 1.0
    only for a right answer). ``info["reward_components"]`` has ``exact`` and ``partial`` either way.

    ## Starting State
    An instance of the current level drawn uniformly with ``np_random``
    (``options={"difficulty": k}`` moves to level k first; ``{"prompt_index": i}`` picks one).

    ## Episode End
    At EOS or the token budget (the longest answer at ``max_difficulty`` + 1); ``info["difficulty"]`` every step.

    ## Arguments
    ``task``, ``difficulty``, ``max_difficulty``, ``split``, ``heldout``, ``num_instances``, ``instance_seed``,
    ``reward`` (see :class:`ProceduralSpec`) and the options of :class:`~aligngym.envs.core.AlignmentEnv`.

    ## Version History
    * v0: initial release.
    """

    def __init__(
        self, task: str | Family = "copy", difficulty: int = 1, render_mode: str | None = None, **kwargs: Any
    ) -> None:
        options = self._build(task, difficulty, kwargs)
        TokenEnv.__init__(self, self.procedural.task, render_mode=render_mode, **options)
        self._runtimes = {self.difficulty: self.runtime}


class ProceduralSequenceEnv(_ProceduralEnv, SequenceEnv):
    """Sequence-level procedural task: the action is the whole answer (a contextual bandit).

    ## Description
    As :class:`ProceduralTokenEnv`, one step per episode.

    ## Action Space
    ``MultiDiscrete([k] * budget)``: token indices of the answer, cut at the first EOS.

    ## Observation Space
    As :class:`ProceduralTokenEnv`.

    ## Rewards
    As :class:`ProceduralTokenEnv`, paid at the one step.

    ## Starting State
    As :class:`ProceduralTokenEnv`.

    ## Episode End
    After one step; ``info["difficulty"]`` at reset and step.

    ## Arguments
    As :class:`ProceduralTokenEnv`.

    ## Version History
    * v0: initial release.
    """

    def __init__(
        self, task: str | Family = "copy", difficulty: int = 1, render_mode: str | None = None, **kwargs: Any
    ) -> None:
        options = self._build(task, difficulty, kwargs)
        SequenceEnv.__init__(self, self.procedural.task, render_mode=render_mode, **options)
        self._runtimes = {self.difficulty: self.runtime}


def _vector_options(task: str | Family, difficulty: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    from aligngym.envs.tokenization import load_tokenizer

    vector_keys = ("autoreset_mode", "scorer_batch_size", "max_episode_steps", "render_mode")
    vector_kw = {k: kwargs.pop(k) for k in vector_keys if k in kwargs}
    spec = ProceduralSpec(task, difficulty, **kwargs)
    tokenizer = load_tokenizer(spec.options.pop("tokenizer", None))
    _with_eos(spec, tokenizer)
    spec.options["tokenizer"] = tokenizer
    return {**spec.runtime_options(spec.difficulty), **vector_kw}


def procedural_token_vector_env(
    num_envs: int = 1, task: str | Family = "copy", difficulty: int = 1, **kwargs: Any
) -> Any:
    """The native vector env of a procedural token-level id, at a fixed ``difficulty`` (same options as the
    single env, plus the vector options of :class:`~aligngym.envs.vector.TokenVectorEnv`)."""
    from aligngym.envs.vector import TokenVectorEnv

    return TokenVectorEnv(num_envs=num_envs, **_vector_options(task, difficulty, kwargs))


def procedural_sequence_vector_env(
    num_envs: int = 1, task: str | Family = "copy", difficulty: int = 1, **kwargs: Any
) -> Any:
    """The native vector env of a procedural sequence-level id, at a fixed ``difficulty``."""
    from aligngym.envs.vector import SequenceVectorEnv

    return SequenceVectorEnv(num_envs=num_envs, **_vector_options(task, difficulty, kwargs))


def procedural_env_ids() -> list[str]:
    """Every procedural id: ``aligngym/<Family>-Token-v0`` and ``-Sequence-v0`` per family."""
    return [f"aligngym/{f.title}-{kind}-v0" for f in FAMILIES.values() for kind in ("Token", "Sequence")]


def register_procedural() -> list[str]:
    """Register the procedural ids (idempotent); returns them."""
    try:
        from aligngym.envs.tasks import register_env
    except ImportError:  # an older tasks.py: plain Gymnasium registration
        register_env = None
    import gymnasium as gym

    ids = []
    for fam in FAMILIES.values():
        for kind in ("Token", "Sequence"):
            env_id = f"aligngym/{fam.title}-{kind}-v0"
            entry = f"aligngym.envs.procedural:Procedural{kind}Env"
            vector = f"aligngym.envs.procedural:procedural_{kind.lower()}_vector_env"
            kwargs = {"task": fam.name, "difficulty": 1}
            desc = f"[{kind.lower()}] {fam.description} (difficulty=1..{MAX_LEVEL})"
            if register_env is not None:
                register_env(env_id, entry, vector, kwargs, desc)
            elif env_id not in gym.registry:
                gym.register(id=env_id, entry_point=entry, vector_entry_point=vector, kwargs=kwargs)
            ids.append(env_id)
    return ids


register_procedural()
# the reasoning-gym ids live next door (reasoning-gym itself is imported only when such an env is made)
from aligngym.envs.reasoning import register_reasoning  # noqa: E402

register_reasoning()

__all__ = [
    "FAMILIES",
    "MAX_LEVEL",
    "ProceduralScorer",
    "ProceduralSequenceEnv",
    "ProceduralSpec",
    "ProceduralTokenEnv",
    "instance_rows",
    "procedural_env_ids",
    "procedural_sequence_vector_env",
    "procedural_token_vector_env",
    "register_procedural",
]
