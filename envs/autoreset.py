"""Gymnasium's autoreset modes, aligngym's batch mode for LM rollouts, and the batched info dicts of vector envs.

A batched info dict holds ``infos[key]`` with one entry per row and ``infos["_key"]`` (bool (N,)) saying which rows
have it, as Gymnasium's vector envs write them; :func:`put_info` writes rows, :func:`select_info` keeps some rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # gymnasium >= 1.1
    from gymnasium.vector import AutoresetMode
except ImportError:  # pragma: no cover - gymnasium 1.0 has no autoreset modes
    AutoresetMode = None  # type: ignore[assignment,misc]

#: Gymnasium's autoreset modes (the enum members; plain strings on gymnasium 1.0)
NEXT_STEP: Any = AutoresetMode.NEXT_STEP if AutoresetMode is not None else "NextStep"
SAME_STEP: Any = AutoresetMode.SAME_STEP if AutoresetMode is not None else "SameStep"
DISABLED: Any = AutoresetMode.DISABLED if AutoresetMode is not None else "Disabled"
#: aligngym's batch mode for KV-cached LM rollouts: rows that finish idle (actions ignored, observation frozen,
#: reward 0, terminated/truncated False) until every row has finished; the next ``step`` (or ``reset``) then
#: starts a new episode in every row at once. ``metadata["autoreset_mode"]`` is this string.
BATCH = "Batch"

#: accepted spellings of the modes
MODE_NAMES = {
    "nextstep": NEXT_STEP,
    "next_step": NEXT_STEP,
    "samestep": SAME_STEP,
    "same_step": SAME_STEP,
    "disabled": DISABLED,
    "batch": BATCH,
}


def resolve_autoreset_mode(mode: Any) -> Any:
    """Normalise an ``autoreset_mode`` option: an ``AutoresetMode`` member, its value or name (any case), or "batch".

    :raises ValueError: for anything else.
    """
    if AutoresetMode is not None and isinstance(mode, AutoresetMode):
        return mode
    if isinstance(mode, str) and mode.lower() in MODE_NAMES:
        return MODE_NAMES[mode.lower()]
    raise ValueError(
        "autoreset_mode must be gymnasium.vector.AutoresetMode.NEXT_STEP / SAME_STEP / DISABLED (or 'next_step', "
        f"'same_step', 'disabled') or 'batch' (aligngym's batch mode for LM rollouts); got {mode!r}"
    )


def mode_value(mode: Any) -> str:
    """The string value of an autoreset mode ("NextStep", "SameStep", "Disabled", "Batch")."""
    return str(getattr(mode, "value", mode))


# -- Gymnasium-style batched infos: infos[key] holds one entry per row, infos["_key"] says which rows have it -------
def put_info(infos: dict[str, Any], key: str, n: int, idx: np.ndarray, values: Any) -> None:
    """Set ``infos[key][idx] = values`` and ``infos["_key"][idx] = True``, creating both arrays as Gymnasium does.

    :param values: a fresh numeric/bool ndarray with ``len(idx)`` rows (stored in an array of its dtype), a list of
        Python objects (stored in an object array), or a dict of such (stored as a nested batched info dict).
    """
    if isinstance(values, dict):
        sub = infos.get(key)
        if sub is None:
            sub = {}
        for k, v in values.items():
            put_info(sub, k, n, idx, v)
        infos[key] = sub
    elif isinstance(values, np.ndarray):
        arr = infos.get(key)
        if arr is None and idx.size == n:
            arr = values  # every row (idx is sorted and unique): callers pass fresh arrays, so no copy
        else:
            if arr is None:
                arr = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
            arr[idx] = values
        infos[key] = arr
    else:
        arr = infos.get(key)
        if arr is None and idx.size == n:
            arr = np.fromiter(values, dtype=object, count=n)  # each value as it is (tuples stay tuples)
        else:
            if arr is None:
                arr = np.full(n, None, dtype=object)
            for i, v in zip(idx.tolist(), values):
                arr[i] = v
        infos[key] = arr
    mask = infos.get(f"_{key}")
    if mask is None and idx.size == n:
        infos[f"_{key}"] = np.ones(n, dtype=np.bool_)
        return
    if mask is None:
        mask = np.zeros(n, dtype=np.bool_)
    mask[idx] = True
    infos[f"_{key}"] = mask


def select_info(infos: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """A copy of a batched info dict restricted to ``rows`` (bool (n,)); keys no selected row has are dropped."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos[f"_{key}"] & rows
        if not mask.any():
            continue
        if isinstance(value, dict):
            out[key] = select_info(value, rows)
        else:
            arr = value.copy()
            arr[~mask] = None if arr.dtype == object else 0
            out[key] = arr
        out[f"_{key}"] = mask
    return out


__all__ = [
    "BATCH",
    "DISABLED",
    "MODE_NAMES",
    "NEXT_STEP",
    "SAME_STEP",
    "AutoresetMode",
    "mode_value",
    "put_info",
    "resolve_autoreset_mode",
    "select_info",
]
