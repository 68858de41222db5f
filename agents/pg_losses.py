"""The clipped policy-gradient losses shared by PPO and GRPO, single-turn and multi-turn.

One copy of the clipped surrogate, the clipped value loss, the k3 KL estimate, the ratio statistics that the
CleanRL keys report (``losses/approx_kl``, ``losses/clipfrac``) and the optimiser step with gradient clipping.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (0 for an empty mask)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate loss ``max(-A r, -A clip(r, 1 - eps, 1 + eps))`` (PPO's, to be minimised).

    :param logp: log-probs of the taken actions under the policy being trained, (B, T).
    :param old_logp: log-probs under the policy that sampled them, (B, T).
    :param adv: advantages, broadcastable to (B, T).
    :param mask: 1 on the positions that count, (B, T).
    :param clip_range: epsilon of the ratio clip.
    :returns: the per-token loss, the ratio and the masked log-ratio, each (B, T).
    """
    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range))
    return loss, ratio, log_ratio


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_vf: float,
) -> torch.Tensor:
    """Half the masked mean squared error of the value head, clipped around the old values when ``clip_range_vf > 0``."""
    v_err = (values - returns) ** 2
    if clip_range_vf > 0:
        v_clip = old_values + torch.clamp(values - old_values, -clip_range_vf, clip_range_vf)
        v_err = torch.max(v_err, (v_clip - returns) ** 2)
    return 0.5 * masked_mean(v_err, mask)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || ref) (unbiased, non-negative): ``exp(d) - d - 1`` with ``d = ref - pi``."""
    diff = (ref_logp - logp) * mask
    return (torch.exp(diff) - diff - 1.0) * mask


@torch.no_grad()
def ratio_stats(
    ratio: torch.Tensor, log_ratio: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[float, float]:
    """``(approx_kl, clipfrac)`` over the masked tokens: the ``(r - 1) - log r`` estimate and the clipped share."""
    approx_kl = float(masked_mean((ratio - 1) - log_ratio, mask))
    clipfrac = float(masked_mean(((ratio - 1).abs() > clip_range).float(), mask))
    return approx_kl, clipfrac


def actor_critic_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_range: float,
    clip_range_vf: float,
    vf_coef: float,
    ent_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's minibatch loss: clipped surrogate + ``vf_coef`` x clipped value loss - ``ent_coef`` x entropy, all
    masked means over the completion tokens.

    :returns: the loss and its parts for logging (``policy_loss``, ``value_loss``, ``approx_kl``, ``clipfrac``,
        ``entropy``).
    """
    pg, ratio, log_ratio = clipped_surrogate(logp, old_logp, adv, mask, clip_range)
    policy_loss = masked_mean(pg, mask)
    value_loss = clipped_value_loss(values, old_values, returns, mask, clip_range_vf)
    ent = masked_mean(entropy, mask)
    loss = policy_loss + vf_coef * value_loss - ent_coef * ent
    approx_kl, clipfrac = ratio_stats(ratio, log_ratio, mask, clip_range)
    parts = {
        "policy_loss": float(policy_loss.detach()),
        "value_loss": float(value_loss.detach()),
        "approx_kl": approx_kl,
        "clipfrac": clipfrac,
        "entropy": float(ent.detach()),
    }
    return loss, parts


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    parameters: Iterable[nn.Parameter],
    max_grad_norm: float,
) -> None:
    """Zero the gradients, back-propagate ``loss``, clip the gradient norm (when ``max_grad_norm > 0``) and step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()


def sequence_mean_step(
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[nn.Parameter],
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    kl: torch.Tensor | None,
    *,
    beta: float,
    clip_range: float,
    max_grad_norm: float,
    stats: dict[str, list[float]],
) -> None:
    """One GRPO gradient step (single- and multi-turn): the clipped surrogate plus ``beta`` x the per-token ``kl``
    (``None``: no KL term), averaged over each sequence's tokens and then over the sequences (DeepSeekMath's loss),
    back-propagated and stepped. Appends the step's ``policy_loss``, ``approx_kl``, ``clipfrac`` and ``kl`` (summed
    over tokens, mean over sequences) to ``stats``.

    :param lengths: float (B, 1) token counts of the sequences (at least 1).
    """
    surrogate_loss, ratio, log_ratio = clipped_surrogate(logp, old_logp, adv, mask, clip_range)
    per_token = surrogate_loss if kl is None else surrogate_loss + beta * kl
    loss = ((per_token * mask).sum(-1) / lengths).mean()
    optimizer_step(optimizer, loss, parameters, max_grad_norm)
    approx_kl, clipfrac = ratio_stats(ratio, log_ratio, mask, clip_range)
    with torch.no_grad():
        stats["policy_loss"].append(float(((surrogate_loss * mask).sum(-1) / lengths).mean()))
    stats["approx_kl"].append(approx_kl)
    stats["clipfrac"].append(clipfrac)
    stats["kl"].append(0.0 if kl is None else float(kl.detach().sum(-1).mean()))


__all__ = [
    "actor_critic_loss",
    "clipped_surrogate",
    "clipped_value_loss",
    "k3_kl",
    "masked_mean",
    "optimizer_step",
    "ratio_stats",
    "sequence_mean_step",
]
