"""Data shipped with aligngym: prompt sets (JSONL), the corpus, the default tokenizer and small model weights.

All text here was written for aligngym. ``build_corpus.py`` and ``build_tokenizer.py`` rebuild the generated files;
:func:`data_path` is how code finds a shipped file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(filename: str) -> Path:
    """Path of a file (or directory) shipped in ``aligngym.envs.data``, e.g. ``data_path("keywords.jsonl")``.

    :param filename: a name relative to the data package.
    """
    return Path(str(resources.files("aligngym.envs.data").joinpath(filename)))


__all__ = ["data_path"]
