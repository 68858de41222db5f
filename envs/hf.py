"""Hugging Face helpers shared by envs, scorers and agents: one place for how aligngym talks to ``transformers``.

Nothing here downloads: every loader takes a local directory (``from_pretrained`` on a path) or an object.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence the ``transformers`` weight-loading progress bar and info logs (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


__all__ = ["quiet_transformers"]
