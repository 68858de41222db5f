"""Shipped alignment tasks as data, and the table that registers every env id.

A :class:`Task` is a prompt set + a scorer + generation limits. Each task is registered twice, as
``aligngym/<Name>-Token-v0`` (one token per step) and ``aligngym/<Name>-Sequence-v0`` (one completion per step).
Registration stores only names and numbers, so ``gym.make`` stays cheap and kwargs deep-copy cheaply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym

NAMESPACE = "aligngym"
SPLITS = ("train", "test", "all")


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


TARGET_WORDS = (" red", " green", " blue", " yellow")

TASKS: dict[str, Task] = {
    "Sentiment": Task(
        name="Sentiment",
        description="continue a review opening so that the continuation reads positive (VADER compound)",
        prompt_file="sentiment.jsonl",
        scorer="sentiment",
        max_prompt_tokens=24,
        max_new_tokens=16,
    ),
    "Keywords": Task(
        name="Keywords",
        description="write a sentence that uses the three given concepts (CommonGen-like keyword coverage)",
        prompt_file="keywords.jsonl",
        scorer="keywords",
        max_prompt_tokens=24,
        max_new_tokens=20,
    ),
    "Similarity": Task(
        name="Similarity",
        description="say what the reference says (MiniLM embedding cosine; BLEU and chrF reported at weight 0)",
        prompt_file="similarity.jsonl",
        scorer={"embedding": 1.0, "bleu": 0.0, "chrf": 0.0},
        max_prompt_tokens=24,
        max_new_tokens=24,
    ),
    "Preference": Task(
        name="Preference",
        description="answer a 'Q: ...\\nA:' question helpfully, politely and on topic (shipped learned reward model)",
        prompt_file="preference_prompts.jsonl",
        scorer="preference_rm",
        max_prompt_tokens=32,
        max_new_tokens=32,
    ),
    "Target": Task(
        name="Target",
        description="say the requested colour words (1-3) then EOS; 5 actions, horizon 4, exact word-match reward",
        prompt_file="target.jsonl",
        scorer="target",
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


def register_task(task: Task, *, overwrite: bool = False) -> list[str]:
    """Add a task to the table and register its two env ids; returns the ids."""
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
    return f"{NAMESPACE}/{task.name}-Token-v0", f"{NAMESPACE}/{task.name}-Sequence-v0"


def _register(task: Task) -> list[str]:
    token_id, seq_id = env_ids(task)
    for env_id, kind in ((token_id, "Token"), (seq_id, "Sequence")):
        if env_id in gym.registry:
            continue  # idempotent on re-import; gymnasium warns on re-registration
        gym.register(
            id=env_id,
            entry_point=f"aligngym.envs.core:{kind}Env",
            vector_entry_point=f"aligngym.envs.vector:{kind}VectorEnv",
            kwargs={"task": task.name},
        )
    return [token_id, seq_id]


def register_all() -> None:
    for task in TASKS.values():
        _register(task)


def list_envs() -> dict[str, str]:
    """Every registered aligngym env id with a one-line description."""
    out: dict[str, str] = {}
    for task in TASKS.values():
        token_id, seq_id = env_ids(task)
        out[token_id] = f"[token] {task.description}"
        out[seq_id] = f"[sequence] {task.description}"
    return out


# -- prompt sets ----------------------------------------------------------------------------------------------------
def data_path(filename: str) -> Path:
    """Path of a file shipped in ``aligngym.envs.data``."""
    return Path(str(resources.files("aligngym.envs.data").joinpath(filename)))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a bad line raises with its line number."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {err}") from err
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}:{lineno}: each line must be a JSON object, got {type(row).__name__}"
                )
            rows.append(row)
    return rows


def normalize_prompt_rows(prompts: Sequence[Any], source: str = "prompts") -> list[dict[str, Any]]:
    """Accept strings or dicts with a ``prompt`` key (plus context columns); return dict rows.

    :raises ValueError: for an empty prompt set or a row without ``prompt``; :raises TypeError: for a non-string prompt.
    """
    if isinstance(prompts, str):
        raise TypeError(f"{source} must be a list of prompts, not one string")
    rows: list[dict[str, Any]] = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            rows.append({"prompt": p})
        elif isinstance(p, Mapping):
            if "prompt" not in p:
                raise ValueError(f"{source}[{i}] has no 'prompt' field: {dict(p)!r}")
            if not isinstance(p["prompt"], str):
                raise TypeError(f"{source}[{i}]['prompt'] must be str, got {type(p['prompt']).__name__}")
            rows.append(dict(p))
        else:
            raise TypeError(f"{source}[{i}] must be a str or a dict with 'prompt', got {type(p).__name__}")
    if not rows:
        raise ValueError(f"{source} is empty: an env needs at least one prompt")
    return rows


def load_prompt_rows(
    task: Task,
    prompts: Sequence[Any] | None = None,
    prompt_file: str | Path | None = None,
    split: str = "train",
) -> list[dict[str, Any]]:
    """The prompt rows an env will draw from: user ``prompts``, a user ``prompt_file``, or the task's shipped set."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if prompts is not None and prompt_file is not None:
        raise ValueError("pass prompts= or prompt_file=, not both")
    if prompts is not None:
        return normalize_prompt_rows(prompts)
    if prompt_file is not None:
        source = str(prompt_file)
        rows = read_jsonl(prompt_file)
    elif task.prompt_file is not None:
        source = task.prompt_file
        rows = read_jsonl(data_path(task.prompt_file))
    else:
        raise ValueError(
            f"task {task.name!r} has no shipped prompts: pass prompts=[...] or prompt_file='prompts.jsonl'"
        )
    if split != "all" and any("split" in r for r in rows):
        wanted = "train" if (task.test_is_train and split == "test") else split
        rows = [r for r in rows if r.get("split", wanted) == wanted]
    if not rows:
        raise ValueError(f"prompt set {source!r} has no rows for split {split!r}")
    return normalize_prompt_rows(rows, source=source)


def with_overrides(task: Task, **kwargs: Any) -> Task:
    """A copy of ``task`` with some fields replaced (``None`` values keep the task's own)."""
    return replace(task, **{k: v for k, v in kwargs.items() if v is not None})
