"""reasoning-gym generators as aligngym tasks: ``aligngym/Reasoning-Token-v0`` / ``-Sequence-v0``.

Any generator of ``reasoning-gym`` (optional extra ``reasoning``) by name; its questions become prompt rows, its own
``score_answer`` the scorer, its config (or its curriculum level, ``difficulty=``) is passed through. Held-out
instances: the test split keeps only questions whose hash puts them there, as in :mod:`aligngym.envs.procedural`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from aligngym.envs.core import SequenceEnv, TaskRuntime, TokenEnv
from aligngym.envs.procedural import _ProceduralEnv
from aligngym.envs.procedural_tasks import instance_split
from aligngym.envs.scorers import BaseScorer
from aligngym.envs.tasks import Task

_RUNTIME_OPTIONS = frozenset(inspect.signature(TaskRuntime.__init__).parameters) - {"self", "task"}
_VECTOR_ONLY = frozenset({"autoreset_mode", "scorer_batch_size"})
DEFAULT_GENERATOR = "basic_arithmetic"


def _reasoning_gym() -> Any:
    try:
        import reasoning_gym
    except ImportError as err:  # an optional extra
        raise ImportError(
            "aligngym/Reasoning-* needs reasoning-gym: pip install 'aligngym[reasoning]' (or reasoning-gym>=0.1.25)"
        ) from err
    return reasoning_gym


def generator_levels(generator: str) -> int:
    """How many difficulty levels reasoning-gym's curriculum of ``generator`` has (1 when it has none)."""
    from reasoning_gym.factory import create_curriculum, has_curriculum

    _reasoning_gym()
    if not has_curriculum(generator):
        return 1
    cur = create_curriculum(generator)
    return max((len(a.levels) for a in cur.attributes.values()), default=1)


def generator_config(
    generator: str, level: int | None, seed: int, size: int, **overrides: Any
) -> dict[str, Any]:
    """The generator's config at curriculum ``level`` (1 = easiest; ``None``: the generator's defaults), with
    ``overrides`` on top.

    :raises ValueError: for a level the generator's curriculum does not have, or one asked of a generator without one.
    """
    from reasoning_gym.factory import create_curriculum, has_curriculum

    config: dict[str, Any] = {}
    if level is not None:
        levels = generator_levels(generator)
        if not 1 <= level <= levels:
            raise ValueError(
                f"difficulty {level} out of range for {generator!r}: its curriculum has 1..{levels}"
            )
        if has_curriculum(generator):
            cur = create_curriculum(generator)
            for name, attr in cur.attributes.items():
                cur.set_attr_level(name, min(level - 1, len(attr.levels) - 1))
            cfg = cur.generate_configuration({"seed": seed, "size": size})
            is_instance = dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)
            config = dataclasses.asdict(cfg) if is_instance else dict(vars(cfg))
    config.update(overrides)
    config.update(seed=seed, size=size)
    return config


class ReasoningScorer(BaseScorer):
    """reasoning-gym's own verifier: ``score_answer(completion, entry)`` of the row's generator, in [0, 1].

    Context columns: ``answer`` and ``metadata`` (the generator's entry), ``generator`` (its name).
    """

    name = "reasoning_gym"
    requires = ("answer", "metadata", "generator")

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        rg = _reasoning_gym()
        out = np.zeros(len(completions), dtype=np.float32)
        for i, (q, c) in enumerate(zip(prompts, completions)):
            entry = {"question": q, "answer": context["answer"][i], "metadata": context["metadata"][i]}
            out[i] = float(rg.get_score_answer_fn(context["generator"][i])(c.strip(), entry))
        return out


class ReasoningSpec:
    """Resolved options of a reasoning env (the same interface :class:`~aligngym.envs.procedural.ProceduralSpec`
    gives the level-switching envs).

    :param generator: a reasoning-gym dataset name (``"basic_arithmetic"``, ``"chain_sum"``, ``"leg_counting"``...).
    :param difficulty: curriculum level, 1 = easiest (``None``: the generator's default config).
    :param max_difficulty: highest level a :class:`~aligngym.envs.curriculum.Curriculum` may move to.
    :param config: the generator's config fields (override the level's); unknown keyword arguments of the env that
        are not env options are added here too.
    :param split: ``"train"``, ``"test"`` (questions disjoint from train) or ``"all"``.
    :param num_instances: questions generated per level (about 4/5 land in train, 1/5 in test).
    :param instance_seed: the generator's seed.
    """

    def __init__(
        self,
        generator: str = DEFAULT_GENERATOR,
        difficulty: int | None = None,
        *,
        max_difficulty: int | None = None,
        config: dict[str, Any] | None = None,
        split: str = "train",
        num_instances: int = 500,
        instance_seed: int = 0,
        **options: Any,
    ) -> None:
        _reasoning_gym()
        from reasoning_gym.factory import DATASETS

        if generator not in DATASETS:
            raise ValueError(
                f"unknown reasoning-gym generator {generator!r}; e.g. {', '.join(sorted(DATASETS)[:8])}"
            )
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        self.generator = generator
        extra = {k: v for k, v in options.items() if k not in _RUNTIME_OPTIONS and k not in _VECTOR_ONLY}
        self.config = {**(config or {}), **extra}
        self.difficulty = difficulty if difficulty is not None else 1
        self.level_given = difficulty is not None
        self.max_difficulty = max_difficulty if max_difficulty is not None else self.difficulty
        if self.max_difficulty < self.difficulty:
            raise ValueError(f"max_difficulty={self.max_difficulty} is below difficulty={self.difficulty}")
        if self.level_given or max_difficulty is not None:
            generator_config(generator, self.max_difficulty, 0, 1)  # validates the top level
        self.split = split
        self.num_instances = num_instances
        self.instance_seed = instance_seed
        self.task = Task(
            name="Reasoning",
            description=f"reasoning-gym {generator!r}",
            prompt_file=None,
            scorer=None,
            max_prompt_tokens=96,
            max_new_tokens=16,
        )
        self.options: dict[str, Any] = {
            "scorer": ReasoningScorer(),
            "split": split,
            **{k: v for k, v in options.items() if k in _RUNTIME_OPTIONS},
        }
        if "gold" in _RUNTIME_OPTIONS:
            self.options.setdefault("gold", ReasoningScorer())
        for key in ("prompts", "prompt_file"):
            if self.options.pop(key, None) is not None:
                raise TypeError(f"reasoning env makes its own prompts from {generator!r}; do not pass {key}=")

    def rows(self, level: int) -> list[dict[str, Any]]:
        """Prompt rows of ``level`` in this env's split."""
        lvl = level if (self.level_given or self.max_difficulty > 1) else None
        cfg = generator_config(self.generator, lvl, self.instance_seed, self.num_instances, **self.config)
        dataset = _reasoning_gym().create_dataset(self.generator, **cfg)
        rows, seen = [], set()
        for entry in dataset:
            q = str(entry["question"])
            if q in seen or (self.split != "all" and instance_split(q) != self.split):
                continue
            seen.add(q)
            rows.append(
                {
                    "prompt": q,
                    "answer": entry["answer"],
                    "metadata": entry["metadata"],
                    "generator": self.generator,
                }
            )
        if not rows:
            raise ValueError(f"{self.generator!r} gave no {self.split} questions out of {self.num_instances}")
        return rows

    def runtime(self, level: int, tokenizer: Any = None) -> TaskRuntime:
        options = dict(self.options)
        if tokenizer is not None:
            options["tokenizer"] = tokenizer
        return TaskRuntime(self.task, prompts=self.rows(level), **options)


class _ReasoningEnv(_ProceduralEnv):
    def _build_reasoning(
        self, generator: str, difficulty: int | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        from aligngym.envs.tokenization import load_tokenizer

        spec = ReasoningSpec(generator, difficulty, **kwargs)
        self.procedural = spec
        spec.options["tokenizer"] = load_tokenizer(spec.options.get("tokenizer"))
        self.difficulty = spec.difficulty
        return {"prompts": spec.rows(self.difficulty), **spec.options}


class ReasoningTokenEnv(_ReasoningEnv, TokenEnv):
    """A reasoning-gym generator as a token-level env.

    ## Description
    Questions of a reasoning-gym generator (``generator="basic_arithmetic"``, ...) as prompts; the answer is
    written token by token and judged by reasoning-gym's own ``score_answer``.

    ## Action Space
    ``Discrete(V)`` (the whole vocabulary; ``action_vocab=`` restricts it).

    ## Observation Space
    As :class:`~aligngym.envs.core.TokenEnv`: a prompt slot of 96 tokens (longer questions are left-truncated with a
    warning: raise ``max_prompt_tokens``) and a budget of 16 tokens.

    ## Rewards
    The verifier's score in [0, 1] at the end.

    ## Starting State
    A question of the current level drawn with ``np_random`` (``options={"difficulty": k}`` moves level first).

    ## Episode End
    At EOS or the token budget; ``info["difficulty"]`` every step.

    ## Arguments
    ``generator``, ``difficulty``, ``max_difficulty``, ``config``, ``split``, ``num_instances``,
    ``instance_seed`` (see :class:`ReasoningSpec`), generator config fields as keywords, and the options of
    :class:`~aligngym.envs.core.AlignmentEnv`.

    ## Version History
    * v0: initial release.
    """

    def __init__(
        self,
        generator: str = DEFAULT_GENERATOR,
        difficulty: int | None = None,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        options = self._build_reasoning(generator, difficulty, kwargs)
        TokenEnv.__init__(self, self.procedural.task, render_mode=render_mode, **options)
        self._runtimes = {self.difficulty: self.runtime}


class ReasoningSequenceEnv(_ReasoningEnv, SequenceEnv):
    """A reasoning-gym generator as a sequence-level env (one step writes the whole answer).

    ## Description
    As :class:`ReasoningTokenEnv`, one step per episode.

    ## Action Space
    ``MultiDiscrete([V] * 16)``, cut at the first EOS.

    ## Observation Space
    As :class:`ReasoningTokenEnv`.

    ## Rewards
    The verifier's score in [0, 1].

    ## Starting State
    As :class:`ReasoningTokenEnv`.

    ## Episode End
    After one step.

    ## Arguments
    As :class:`ReasoningTokenEnv`.

    ## Version History
    * v0: initial release.
    """

    def __init__(
        self,
        generator: str = DEFAULT_GENERATOR,
        difficulty: int | None = None,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        options = self._build_reasoning(generator, difficulty, kwargs)
        SequenceEnv.__init__(self, self.procedural.task, render_mode=render_mode, **options)
        self._runtimes = {self.difficulty: self.runtime}


def register_reasoning() -> list[str]:
    """Register ``aligngym/Reasoning-Token-v0`` and ``-Sequence-v0`` (idempotent; reasoning-gym is imported only
    when an env is made)."""
    import gymnasium as gym

    try:
        from aligngym.envs.tasks import register_env
    except ImportError:
        register_env = None
    ids = []
    for kind in ("Token", "Sequence"):
        env_id = f"aligngym/Reasoning-{kind}-v0"
        entry = f"aligngym.envs.reasoning:Reasoning{kind}Env"
        kwargs = {"generator": DEFAULT_GENERATOR}
        desc = (
            f"[{kind.lower()}] any reasoning-gym generator (generator=..., difficulty=...), its own verifier"
        )
        if register_env is not None:
            register_env(env_id, entry, None, kwargs, desc)
        elif env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry, kwargs=kwargs)
        ids.append(env_id)
    return ids


__all__ = [
    "ReasoningScorer",
    "ReasoningSequenceEnv",
    "ReasoningSpec",
    "ReasoningTokenEnv",
    "generator_config",
    "generator_levels",
    "register_reasoning",
]
