"""Multi-turn credit assignment and log-prob bookkeeping for the dialogue envs (``aligngym/Dialogue-*``, ``Guess-*``).

:func:`history_from_transcript` rebuilds the exact token history and a mask of the assistant's tokens from
``info["transcript"]``; :func:`history_logprobs` scores every assistant token of a history in one forward pass (the
update-time log-probs that must equal the sampling-time ones); :func:`turn_level_returns` spreads per-turn rewards
over the tokens of each turn (turn-level credit), the alternative to the token-level Monte-Carlo returns that
:class:`~aligngym.agents.reinforce.ReinforceAgent` computes when it trains on a ``-Token-v0`` dialogue env.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def history_from_transcript(
    transcript: Sequence[dict[str, Any]], user_sep: Sequence[int], assistant_sep: Sequence[int]
) -> tuple[list[int], list[bool]]:
    """The token history a dialogue env showed, rebuilt from its transcript, and which ids the assistant sampled.

    The layout is ``user_sep + user ids + assistant_sep + assistant ids + user_sep + ...``; the separators are the
    env's ``runtime.user_sep`` / ``runtime.assistant_sep``. A final user message (the answer after the last turn)
    has no assistant separator after it.

    :returns: ``(ids, assistant)``: the ids and a same-length list, True where the assistant sampled the id.
    :raises ValueError: for a transcript whose roles do not alternate starting with the user.
    """
    ids: list[int] = []
    assistant: list[bool] = []
    for k, turn in enumerate(transcript):
        want = "user" if k % 2 == 0 else "assistant"
        if turn["role"] != want:
            raise ValueError(
                f"transcript[{k}] has role {turn['role']!r}; roles must alternate user, assistant, ..."
            )
        if want == "user":
            part = list(user_sep) + list(turn["ids"])
            if k + 1 < len(transcript):
                part += list(assistant_sep)
            ids += part
            assistant += [False] * len(part)
        else:
            ids += list(turn["ids"])
            assistant += [True] * len(turn["ids"])
    return ids, assistant


def history_logprobs(
    policy: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    assistant_mask: torch.Tensor,
    temperature: float = 1.0,
    action_masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-probs of the assistant's tokens of whole histories in one forward pass of a causal-LM policy.

    :param policy: a :class:`~aligngym.agents.policies.CausalLMPolicy` (its ``model`` and ``action_ids`` are used)
        or a ``transformers`` causal LM (full vocabulary).
    :param input_ids: LongTensor (B, L): histories laid out from position 0 (the dialogue env's observation).
    :param attention_mask: (B, L), 1 on the history.
    :param assistant_mask: bool (B, L), True on the assistant's ids (never on position 0).
    :param temperature: the sampling temperature the rollout used.
    :param action_masks: bool (B, L, k): the valid actions when the id at each position was sampled (the env's
        ``info["action_mask"]``); invalid actions get probability 0, as when sampling.
    :returns: float32 (B, L): log pi(id_t | ids_<t) at assistant positions, 0 elsewhere.
    """
    if bool(assistant_mask[:, 0].any()):
        raise ValueError("an assistant token at position 0 has no context to be scored from")
    model = getattr(policy, "model", policy)
    action_ids = getattr(policy, "action_ids", None)
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits.float()
    logits = logits[:, :-1] / temperature  # logits at t-1 predict the id at t
    target = input_ids[:, 1:]
    if action_ids is not None:  # restricted actions: softmax over the action tokens only
        logits = logits.index_select(-1, action_ids)
        lookup = torch.full((int(model.config.vocab_size),), -1, dtype=torch.long, device=input_ids.device)
        lookup[action_ids] = torch.arange(len(action_ids), device=input_ids.device)
        target = lookup[target].clamp(min=0)
    if action_masks is not None:
        logits = logits.masked_fill(~action_masks[:, 1:].bool(), torch.finfo(logits.dtype).min)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    out[:, 1:] = logp * assistant_mask[:, 1:].to(logp.dtype)
    return out


def turn_level_returns(
    turn_rewards: Sequence[float], tokens_per_turn: Sequence[int], gamma: float = 1.0
) -> np.ndarray:
    """Turn-level credit: every token of turn k gets the discounted return from turn k on.

    G_k = sum_{j >= k} gamma^(j - k) r_j over turns (the episode score belongs in the last turn's reward); token
    positions within a turn share their turn's G_k, so the discount counts turns, not tokens.

    :param turn_rewards: r_k, one per assistant turn.
    :param tokens_per_turn: the number of ids of each turn.
    :returns: float64 (sum(tokens_per_turn),), the return of every assistant token in order.
    """
    if len(turn_rewards) != len(tokens_per_turn):
        raise ValueError(f"{len(turn_rewards)} turn rewards but {len(tokens_per_turn)} turns")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    g, returns = 0.0, []
    for r in reversed(list(turn_rewards)):
        g = float(r) + gamma * g
        returns.append(g)
    returns.reverse()
    return np.repeat(np.asarray(returns, dtype=np.float64), np.asarray(tokens_per_turn, dtype=np.int64))


__all__ = ["history_from_transcript", "history_logprobs", "turn_level_returns"]
