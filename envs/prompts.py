"""Prompt sources: where an env's prompts come from and how they become rows (``prompt`` + context columns).

A source is a list of strings, a list of dicts, a Hugging Face ``datasets.Dataset`` (or ``DatasetDict``), or a path:
a JSONL file, a Parquet file or a directory written by ``Dataset.save_to_disk``. Columns other than ``prompt`` and
``split`` become the scorer's context columns. ``datasets`` is optional (extra ``datasets``): only needed for a saved
dataset directory; Parquet needs ``pyarrow``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aligngym.envs.data import data_path

if TYPE_CHECKING:
    from aligngym.envs.tasks import Task

#: values of the ``split`` option
SPLITS = ("train", "test", "all")
#: row fields that are not scorer context
NOT_CONTEXT = frozenset({"prompt", "split"})
#: file suffixes a path source may have (a directory is a saved ``datasets`` dataset)
PROMPT_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a bad line raises with its line number.

    :param path: the file.
    :raises ValueError: for a line that is not a JSON object.
    """
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


def read_parquet(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a Parquet file (one dict per row).

    :param path: the file.
    :raises ImportError: without ``pyarrow`` (it comes with the ``datasets`` extra).
    """
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            f"reading the Parquet prompt file {str(path)!r} needs pyarrow: pip install 'aligngym[datasets]' "
            "(or pip install pyarrow)"
        ) from err
    rows: list[dict[str, Any]] = pq.read_table(str(path)).to_pylist()
    return rows


def is_hf_dataset(obj: Any) -> bool:
    """Whether ``obj`` is a Hugging Face ``datasets.Dataset`` or ``DatasetDict`` (checked without importing it)."""
    return type(obj).__module__.split(".")[0] == "datasets" and type(obj).__name__ in (
        "Dataset",
        "DatasetDict",
    )


def dataset_rows(dataset: Any, split: str = "all") -> list[dict[str, Any]]:
    """Rows of a ``datasets.Dataset``; of a ``DatasetDict``, the rows of its ``split`` (every split for "all").

    :param dataset: a ``Dataset`` or ``DatasetDict``.
    :param split: ``"train"``, ``"test"`` or ``"all"``.
    :raises ValueError: for a ``DatasetDict`` without the split asked for.
    """
    if type(dataset).__name__ == "DatasetDict":
        if split == "all":
            return [r for name in dataset for r in dataset[name].to_list()]
        if split not in dataset:
            raise ValueError(f"the DatasetDict has splits {sorted(dataset)}, not {split!r}")
        rows: list[dict[str, Any]] = dataset[split].to_list()
        return rows
    out: list[dict[str, Any]] = dataset.to_list()
    return out


def load_dataset_dir(path: str | Path) -> Any:
    """A dataset saved with ``save_to_disk`` (``Dataset`` or ``DatasetDict``).

    :param path: the directory.
    :raises ImportError: without the optional ``datasets`` package (extra ``datasets``).
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"{str(path)!r} is a directory: reading a saved dataset needs the optional 'datasets' package: "
            "pip install 'aligngym[datasets]'"
        ) from err
    return datasets.load_from_disk(str(path))


def read_prompt_file(path: str | Path, split: str = "all") -> list[dict[str, Any]]:
    """Rows of a prompt file: ``.jsonl`` / ``.json`` (JSON lines), ``.parquet``, or a saved dataset directory.

    :param path: the file or directory.
    :param split: for a saved ``DatasetDict``: which of its splits.
    :raises FileNotFoundError: when nothing is at ``path``.
    :raises ValueError: for another suffix.
    """
    p = Path(path)
    if p.is_dir():
        return dataset_rows(load_dataset_dir(p), split)
    if not p.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return read_parquet(p)
    if suffix in (".jsonl", ".json"):
        return read_jsonl(p)
    raise ValueError(
        f"prompt file {str(path)!r} must be JSONL (.jsonl), Parquet (.parquet) or a dataset directory "
        f"(save_to_disk), got suffix {suffix!r}"
    )


def normalize_prompt_rows(prompts: Sequence[Any], source: str = "prompts") -> list[dict[str, Any]]:
    """Accept strings or dicts with a ``prompt`` key (plus context columns); return dict rows.

    :param prompts: the prompts.
    :param source: how error messages name the prompt set.
    :raises ValueError: for an empty prompt set or a row without ``prompt``.
    :raises TypeError: for a non-string prompt.
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


def _is_path_source(value: Any) -> bool:
    if isinstance(value, Path):
        return True
    if not isinstance(value, str) or "\n" in value:
        return False
    return value.lower().endswith(PROMPT_FILE_SUFFIXES) or Path(value).is_dir()


def load_prompt_rows(
    task: Task,
    prompts: Any = None,
    prompt_file: str | Path | None = None,
    split: str = "train",
) -> list[dict[str, Any]]:
    """The prompt rows an env will draw from: user ``prompts``, a user ``prompt_file``, or the task's shipped set.

    A list of prompts is taken as it is. Table sources (a ``datasets.Dataset``, a path given as ``prompts=`` or
    ``prompt_file=``, the task's shipped file) keep the rows of ``split`` when they have a ``split`` column (a
    task with ``test_is_train`` reads its train rows for "test").

    :param task: the task (its shipped prompt file and ``test_is_train``).
    :param prompts: a list of strings or dicts, a ``datasets.Dataset`` / ``DatasetDict``, or a path.
    :param prompt_file: a path (JSONL, Parquet, dataset directory).
    :param split: ``"train"``, ``"test"`` or ``"all"``.
    :raises ValueError: for an unknown split, both sources at once, or no rows left.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if prompts is not None and prompt_file is not None:
        raise ValueError("pass prompts= or prompt_file=, not both")
    wanted = "train" if (task.test_is_train and split == "test") else split
    if prompts is not None and _is_path_source(prompts):
        prompt_file, prompts = prompts, None
    if prompts is not None and is_hf_dataset(prompts):
        source = f"prompts ({type(prompts).__name__})"
        rows = dataset_rows(prompts, wanted)
    elif prompts is not None:
        if isinstance(prompts, str):
            raise TypeError(
                "prompts must be a list of prompts, not one string (or a path to a .jsonl / .parquet file or a "
                f"saved dataset directory); got {prompts[:60]!r}"
            )
        return normalize_prompt_rows(prompts)
    elif prompt_file is not None:
        source = str(prompt_file)
        rows = read_prompt_file(prompt_file, wanted)
    elif task.prompt_file is not None:
        source = task.prompt_file
        rows = read_prompt_file(data_path(task.prompt_file), wanted)
    else:
        raise ValueError(
            f"task {task.name!r} has no shipped prompts: pass prompts=[...] or prompt_file='prompts.jsonl'"
        )
    if wanted != "all" and any(r.get("split") is not None for r in rows):
        rows = [r for r in rows if r.get("split", wanted) in (wanted, None)]
    if not rows:
        raise ValueError(f"prompt set {source!r} has no rows for split {split!r}")
    rows = [{k: v for k, v in r.items() if not (k == "split" and v is None)} for r in rows]
    return normalize_prompt_rows(rows, source=source)


__all__ = [
    "NOT_CONTEXT",
    "SPLITS",
    "dataset_rows",
    "is_hf_dataset",
    "load_prompt_rows",
    "normalize_prompt_rows",
    "read_jsonl",
    "read_parquet",
    "read_prompt_file",
]
