"""Sampling helpers of the causal-LM policies: logits processing (temperature, top-k, top-p), drawing actions, the
records of a KV-cached decode (:class:`DecodeState`) and of a sampled batch (:class:`Completion`), and the work they
skip (padding no row attends, steps after every row's end, finished rows of a decode).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

#: ``hook(step, logits (B, k) float32, actions_so_far LongTensor (B, step)) -> logits`` applied before sampling
LogitsHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def check_ids_and_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """Raise unless ``input_ids`` is a LongTensor (B, L) and ``attention_mask`` has its shape.

    :raises ValueError: on the shapes. :raises TypeError: on the ids' dtype.
    """
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids and attention_mask must both be (B, L), got {tuple(input_ids.shape)} and "
            f"{tuple(attention_mask.shape)}"
        )
    if input_ids.dtype != torch.long:
        raise TypeError(f"input_ids must be a LongTensor (token ids), got {input_ids.dtype}")


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, L) counting attended tokens only, so left padding does not shift positions."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def process_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering; filtered entries become ``-inf``.

    :param logits: float (B, k).
    :returns: float (B, k) (a new tensor).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive (use greedy=True for argmax), got {temperature}")
    out = logits / temperature if temperature != 1.0 else logits.clone()
    if top_k and top_k < out.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p < 1.0:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        sorted_logits, order = torch.sort(out, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop_sorted = (
            cum - torch.softmax(sorted_logits, dim=-1)
        ) >= top_p  # keep the token that crosses top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def sample_actions(
    logits: torch.Tensor, generator: torch.Generator | None = None, greedy: bool = False
) -> torch.Tensor:
    """Draw one action per row from (already processed) logits float (B, k); argmax when ``greedy``."""
    if greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclasses.dataclass
class DecodeState:
    """Where a KV-cached decode stands: the next-token logits (B, k) float32, values (B,), cache and mask (B, t)."""

    logits: torch.Tensor
    values: torch.Tensor | None
    past: Any
    attention_mask: torch.Tensor
    next_position: torch.Tensor


@dataclasses.dataclass
class Completion:
    """Output of :meth:`CausalLMPolicy.sample`.

    ``actions``/``tokens``: LongTensor (B, T) action indices / token ids (``pad_action`` / pad id after the end);
    ``mask``: (B, T) 1 for generated positions (the EOS included); ``lengths``: (B,); ``logprobs``: float (B, T) of
    the sampled actions under the processed distribution (0 after the end).
    """

    actions: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    logprobs: torch.Tensor


def drop_finished(
    state: DecodeState, rows: torch.Tensor | None, alive: torch.Tensor
) -> tuple[torch.Tensor | None, DecodeState]:
    """Drop the finished rows from a decode state (KV cache included) when its cache can select rows.

    :param rows: the batch rows the state holds (``None``: all, in order).
    :param alive: bool (B,) over the whole batch.
    :returns: the rows kept and their state (the same objects when nothing is dropped).
    """
    held = torch.arange(alive.shape[0], device=alive.device) if rows is None else rows
    keep = alive[held]
    if bool(keep.all()) or not hasattr(state.past, "batch_select_indices"):
        return rows, state
    idx = torch.nonzero(keep).squeeze(1)
    state.past.batch_select_indices(idx)
    return held[idx], DecodeState(
        state.logits[idx],
        None if state.values is None else state.values[idx],
        state.past,
        state.attention_mask[idx],
        state.next_position[idx],
    )


def trim_left_padding(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids``, ``mask`` (B, L) without the leading columns that no row attends (left padding common to all rows).

    Nothing attends those columns and positions count attended tokens only, so every output is unchanged; a batch of
    short prompts in a wide prompt slot runs on its own width. A mask with no attended token is returned as is.
    """
    seen = mask.bool().any(0)
    if mask.shape[1] == 0 or bool(seen[0]) or not bool(seen.any()):
        return ids, mask
    first = int(seen.long().argmax())
    return ids[:, first:], mask[:, first:]


def used_steps(mask: torch.Tensor) -> int:
    """1 + the last column of ``mask`` (B, T) that any row has set (0 for an all-zero mask)."""
    seen = mask.bool().any(0)
    if not bool(seen.any()):
        return 0
    return int(seen.shape[0] - int(seen.flip(0).long().argmax()))


__all__ = [
    "Completion",
    "DecodeState",
    "LogitsHook",
    "drop_finished",
    "positions_from_mask",
    "process_logits",
    "sample_actions",
    "trim_left_padding",
    "used_steps",
]
