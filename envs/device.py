"""Device resolution shared by scorers, reference models and agents (``"auto"`` picks CUDA when there is one)."""

from __future__ import annotations


def resolve_device(device: str | None = "auto") -> str:
    """``"auto"``/``None`` -> ``"cuda"`` if torch sees a GPU else ``"cpu"``; other strings are checked and returned.

    :raises ValueError: for ``"cuda"`` on a machine without CUDA, or an unknown device string.
    """
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    dev = str(device)
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {dev!r} requested but torch sees no CUDA device; use 'cpu' or 'auto'")
        return dev
    if dev in ("cpu", "mps") or dev.startswith("cpu"):
        return dev
    raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda[:N]'")
