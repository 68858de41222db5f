"""Hugging Face helpers shared by envs, scorers and agents: one place for how aligngym talks to ``transformers``.

Nothing here downloads: every loader takes a local directory (``from_pretrained`` on a path) or an object. The KV
cache is passed under the name the installed ``transformers`` expects (``cache`` from 5.x, ``past_key_values`` before).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


def load_local_pretrained(auto_class: Any, path: str | Path, what: str = "model", **kwargs: Any) -> Any:
    """``auto_class.from_pretrained(path, local_files_only=True, trust_remote_code=False, **kwargs)``, quietly.

    :param auto_class: a ``transformers`` class with ``from_pretrained`` (``AutoModelForCausalLM`` ...).
    :param path: a local directory holding ``config.json`` (saved with ``save_pretrained``).
    :param what: how error messages name the thing being loaded.
    :param kwargs: passed on to ``from_pretrained`` (``dtype=`` ...; given as ``torch_dtype=`` to transformers
        before 4.56, which took only that name).
    :raises FileNotFoundError: when ``path`` is not a directory with a ``config.json``; aligngym never downloads.
    """
    root = Path(path)
    if not (root / "config.json").is_file():
        raise FileNotFoundError(
            f"{what} {str(path)!r} is not a local model directory ({root} has no config.json); aligngym never "
            "downloads: pass a directory saved with save_pretrained"
        )
    if "dtype" in kwargs and not takes_dtype():
        kwargs["torch_dtype"] = kwargs.pop("dtype")  # before 4.56 ``dtype`` would land in the config unused
    with quiet_transformers():  # no weight-loading progress bar
        return auto_class.from_pretrained(str(root), local_files_only=True, trust_remote_code=False, **kwargs)


@functools.lru_cache(maxsize=1)
def transformers_version() -> tuple[int, int]:
    """``(major, minor)`` of the installed ``transformers``."""
    import transformers

    major, minor = [*transformers.__version__.split("."), "0"][:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def takes_dtype() -> bool:
    """Whether ``from_pretrained`` takes ``dtype=`` (transformers 4.56 on; ``torch_dtype=`` before, deprecated since)."""
    return transformers_version() >= (4, 56)


@functools.lru_cache(maxsize=64)
def _cache_name_of(forward: Any) -> str:
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def cache_kwarg(model: Any, cache: Any) -> dict[str, Any]:
    """The KV cache as the keyword ``model.forward`` takes: ``{"cache": c}`` (transformers 5.x) or
    ``{"past_key_values": c}`` (4.x), so no deprecation warning is raised on either.

    :param model: a ``transformers`` model.
    :param cache: the cache returned by the previous call (see :func:`output_cache`), or ``None``.
    """
    return {_cache_name_of(type(model).forward): cache}


@functools.lru_cache(maxsize=1)
def _dynamic_cache_keyword() -> str:
    from transformers import DynamicCache

    params = inspect.signature(DynamicCache.__init__).parameters
    return "ddp_cache_data" if "ddp_cache_data" in params else "_distributed_cache_data"


def dynamic_cache(kv: Any) -> Any:
    """A ``transformers`` ``DynamicCache`` holding ``kv`` (keys, values per layer), built with the keyword the
    installed version takes (``ddp_cache_data`` on 5.x, ``_distributed_cache_data`` on 4.x).

    :param kv: ``[(keys, values), ...]``, one pair per layer, each (batch, heads, positions, head_dim).
    """
    from transformers import DynamicCache

    return DynamicCache(**{_dynamic_cache_keyword(): kv})


def output_cache(output: Any) -> Any:
    """The KV cache of a model output (``output.cache`` on 5.x, ``output.past_key_values`` on 4.x), or ``None``."""
    keys = output.keys() if hasattr(output, "keys") else ()
    if "cache" in keys or hasattr(type(output), "cache"):
        return getattr(output, "cache", None)
    return getattr(output, "past_key_values", None)


__all__ = [
    "cache_kwarg",
    "dynamic_cache",
    "load_local_pretrained",
    "output_cache",
    "quiet_transformers",
    "takes_dtype",
    "transformers_version",
]
