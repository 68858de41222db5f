"""Shipped alignment tasks as data, and the one table that registers every env id.

A :class:`Task` is a prompt set + a scorer (+ a gold scorer) + generation limits. Each task is registered as
``aligngym/<Name>-Token-v0`` (one token per step) and ``aligngym/<Name>-Sequence-v0`` (one completion per step),
each with ``-Flat-v0`` and ``-Embedding-v0`` observation variants. Other modules add ids with :func:`register_env`.
Registration stores only names and numbers, so ``gym.make`` stays cheap and kwargs deep-copy cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym

from aligngym.envs.data import data_path
from aligngym.envs.prompts import SPLITS, load_prompt_rows, normalize_prompt_rows, read_jsonl

NAMESPACE = "aligngym"
#: observation variants of every task id: suffix -> (entry point, description prefix)
OBSERVATION_VARIANTS = {
    "Flat": ("aligngym.envs.wrappers:make_flat_env", "flat Box observation"),
    "Embedding": ("aligngym.envs.wrappers:make_embedding_env", "frozen-encoder embedding observation"),
}


@dataclass(frozen=True)
class Task:
    """One alignment task.

    :param name: CamelCase name used in the env ids.
    :param description: one line for ``list_envs()`` and the README table.
    :param prompt_file: JSONL file in ``aligngym.envs.data`` (rows: ``prompt``, ``split`` and context columns);
        ``None`` for the generic ``Text`` task, which takes ``prompts=`` / ``prompt_file=``.
    :param scorer: scorer spec (registered name or ``{name: weight}``); ``None`` means the user must pass one.
    :param max_prompt_tokens: prompt slot length in tokens (longer prompts are left-truncated with a warning).
    :param max_new_tokens: completion budget in tokens.
    :param action_vocab: default restricted action vocabulary (strings, each one token), or ``None`` for all ids.
    :param stop: stop strings that end a completion (cut from the completion text).
    :param test_is_train: the test split is the train split (tabular tasks, where generalisation is not the point).
    :param extra: free-form task data for other modules.
    :param gold: the default gold scorer spec (what ``gold=`` takes): a judge the agent never sees, reported at
        episode end as ``info["gold_score"]`` and never part of the reward; ``None``: no gold.
    """

    name: str
    description: str
    prompt_file: str | None
    scorer: Any
    max_prompt_tokens: int = 32
    max_new_tokens: int = 16
    action_vocab: tuple[str, ...] | None = None
    stop: tuple[str, ...] = ()
    test_is_train: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    gold: Any = None


TARGET_WORDS = (" red", " green", " blue", " yellow")

TASKS: dict[str, Task] = {
    "Sentiment": Task(
        name="Sentiment",
        description="continue a review opening so that the continuation reads positive (VADER compound)",
        prompt_file="sentiment.jsonl",
        scorer="sentiment",
        gold="sentiment_gold",
        max_prompt_tokens=24,
        max_new_tokens=16,
    ),
    "Keywords": Task(
        name="Keywords",
        description="write a sentence that uses the three given concepts (CommonGen-like keyword coverage)",
        prompt_file="keywords.jsonl",
        scorer="keywords",
        gold="keywords_gold",
        max_prompt_tokens=24,
        max_new_tokens=20,
    ),
    "Similarity": Task(
        name="Similarity",
        description="say what the reference says (MiniLM embedding cosine; BLEU and chrF reported at weight 0)",
        prompt_file="similarity.jsonl",
        scorer={"embedding": 1.0, "bleu": 0.0, "chrf": 0.0},
        gold="similarity_gold",
        max_prompt_tokens=24,
        max_new_tokens=24,
    ),
    "Preference": Task(
        name="Preference",
        description="answer a 'Q: ... A:' question helpfully, politely and on topic (shipped learned reward model)",
        prompt_file="preference_prompts.jsonl",
        scorer="preference_rm",
        gold="preference_gold",
        max_prompt_tokens=32,
        max_new_tokens=32,
    ),
    "Target": Task(
        name="Target",
        description="say the requested colour words (1-3) then EOS; 5 actions, horizon 4, exact word-match reward",
        prompt_file="target.jsonl",
        scorer="target",
        gold="target",
        max_prompt_tokens=12,
        max_new_tokens=4,
        action_vocab=(*TARGET_WORDS, "<|endoftext|>"),
        test_is_train=True,
    ),
    "Text": Task(
        name="Text",
        description="generic: your prompts (prompts= or prompt_file=) and your scorer (scorer=)",
        prompt_file=None,
        scorer=None,
        max_prompt_tokens=32,
        max_new_tokens=16,
    ),
}


@dataclass(frozen=True)
class EnvEntry:
    """One row of the registration table (what :func:`list_envs` reads).

    :param id: the Gymnasium id.
    :param description: one line.
    :param variant_of: for an observation variant (``-Flat`` / ``-Embedding``), the id it wraps.
    """

    id: str
    description: str
    variant_of: str | None = None


#: every aligngym id registered through :func:`register_env`, in registration order
ENVS: dict[str, EnvEntry] = {}


def register_env(
    id: str,
    entry_point: str | Any,
    vector_entry_point: str | Any | None = None,
    kwargs: Mapping[str, Any] | None = None,
    description: str = "",
    *,
    variant_of: str | None = None,
) -> str:
    """Register a Gymnasium id and record it (with its description) in the table :func:`list_envs` reads.

    Modules that add envs (dialogue, procedural tasks, ...) call this at import and import from
    ``aligngym/envs/__init__.py``. Idempotent: an id already in ``gym.registry`` is not registered again
    (Gymnasium warns on re-registration), but its description is recorded.

    :param id: ``"aligngym/<Name>-v0"``.
    :param entry_point: ``"module:callable"`` (preferred: keeps import light) or a callable.
    :param vector_entry_point: the native vector env, if any (``gym.make_vec`` uses it by default).
    :param kwargs: default kwargs (names and numbers: they are deep-copied on every ``gym.make``).
    :param description: one line for ``list_envs()``.
    :param variant_of: set for observation variants of another id (listed only with ``list_envs(variants=True)``).
    :returns: the id.
    :raises ValueError: for an id outside the ``aligngym/`` namespace or an empty description.
    """
    if not isinstance(id, str) or not id.startswith(f"{NAMESPACE}/"):
        raise ValueError(f"env id must start with {NAMESPACE + '/'!r}, got {id!r}")
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"register_env({id!r}) needs a one-line description for list_envs()")
    if id not in gym.registry:
        gym.register(
            id=id, entry_point=entry_point, vector_entry_point=vector_entry_point, kwargs=dict(kwargs or {})
        )
    ENVS[id] = EnvEntry(id=id, description=description.strip(), variant_of=variant_of)
    return id


def register_task(task: Task, *, overwrite: bool = False) -> list[str]:
    """Add a task to the table and register its ids (token, sequence and their observation variants).

    :param task: the task.
    :param overwrite: replace a different task of the same name.
    :returns: the token and sequence ids.
    :raises ValueError: when another task of that name exists and ``overwrite`` is False.
    """
    if task.name in TASKS and not overwrite and TASKS[task.name] != task:
        raise ValueError(f"task {task.name!r} already exists; pass overwrite=True to replace it")
    TASKS[task.name] = task
    return _register(task)


def get_task(task: str | Task) -> Task:
    """Look up a task by name (case-insensitive) or return a :class:`Task` unchanged."""
    if isinstance(task, Task):
        return task
    for name, t in TASKS.items():
        if name.lower() == str(task).lower():
            return t
    raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")


def env_ids(task: Task) -> tuple[str, str]:
    """The token- and sequence-level ids of a task."""
    return f"{NAMESPACE}/{task.name}-Token-v0", f"{NAMESPACE}/{task.name}-Sequence-v0"


def variant_id(base_id: str, kind: str) -> str:
    """``aligngym/Sentiment-Token-v0`` + ``"Flat"`` -> ``aligngym/Sentiment-Token-Flat-v0``."""
    return base_id.removesuffix("-v0") + f"-{kind}-v0"


def register_observation_variants(base_ids: Any = None) -> list[str]:
    """Register the ``-Flat-v0`` and ``-Embedding-v0`` ids of base ids (default: every task's); idempotent.

    :param base_ids: ids to add variants for.
    :returns: the variant ids that were not registered before.
    """
    if base_ids is None:
        base_ids = [i for t in TASKS.values() for i in env_ids(t)]
    added = []
    for base in base_ids:
        desc = ENVS[base].description if base in ENVS else base
        for kind, (entry, what) in OBSERVATION_VARIANTS.items():
            new_id = variant_id(base, kind)
            if new_id not in gym.registry:
                added.append(new_id)
            register_env(
                new_id, entry, kwargs={"base_id": base}, description=f"[{what}] {desc}", variant_of=base
            )
    return added


def _register(task: Task) -> list[str]:
    token_id, seq_id = env_ids(task)
    for env_id, kind in ((token_id, "Token"), (seq_id, "Sequence")):
        register_env(
            env_id,
            f"aligngym.envs.core:{kind}Env",
            vector_entry_point=f"aligngym.envs.vector:{kind}VectorEnv",
            kwargs={"task": task.name},
            description=f"[{kind.lower()}] {task.description}",
        )
    register_observation_variants([token_id, seq_id])
    return [token_id, seq_id]


def register_all() -> None:
    """Register every task of :data:`TASKS` (idempotent)."""
    for task in TASKS.values():
        _register(task)


def list_envs(variants: bool = False) -> dict[str, str]:
    """Every registered aligngym env id with a one-line description (ids other modules added with
    :func:`register_env` included).

    :param variants: also list the observation variants (``-Flat-v0`` Box of token ids, ``-Embedding-v0`` encoder
        vector) of every id. They are left out by default because code that loops over the ids expects the
        ``Dict(input_ids, attention_mask)`` observation.
    """
    return {e.id: e.description for e in ENVS.values() if variants or e.variant_of is None}


def with_overrides(task: Task, **kwargs: Any) -> Task:
    """A copy of ``task`` with some fields replaced (``None`` values keep the task's own)."""
    return replace(task, **{k: v for k, v in kwargs.items() if v is not None})


__all__ = [
    "ENVS",
    "NAMESPACE",
    "SPLITS",
    "TASKS",
    "EnvEntry",
    "Task",
    "data_path",
    "env_ids",
    "get_task",
    "list_envs",
    "load_prompt_rows",
    "normalize_prompt_rows",
    "read_jsonl",
    "register_all",
    "register_env",
    "register_observation_variants",
    "register_task",
    "variant_id",
    "with_overrides",
]
