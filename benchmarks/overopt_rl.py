"""RL half of the Goodhart-curve protocol (Gao et al. 2022): PPO against a proxy at several fixed KL coefficients.

Each run trains on the task's train prompts with ``gold=False`` (the gold judge is never in the training loop) and
stops at evenly spaced checkpoints; at each it samples completions of the held-out prompts and records (KL, proxy,
gold), so one run gives several points. The points are fitted with the RL form ``d (alpha - beta log d)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: the seed offset of the evaluation samples: every checkpoint of every run samples with the same generator seed
EVAL_SEED_OFFSET = 10_007


def run_rl(
    task: str,
    proxy: Any,
    gold: Any,
    kl_coefs: Sequence[float] = (0.02, 0.1, 0.5),
    steps: int = 2048,
    evals: int = 4,
    n_eval: int = 8,
    n_prompts: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    learning_rate: float = 1e-4,
    num_envs: int = 16,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """PPO against ``proxy`` at fixed KL coefficients; gold, proxy and KL (on evaluation completions) per checkpoint.

    :param task: a shipped task name (``"Sentiment"``, ``"Preference"`` ...); training uses its ``-Token-v0`` env.
    :param proxy: the reward PPO maximises (anything ``make_scorer`` takes).
    :param gold: the judge scored only at the checkpoints (anything ``make_scorer`` takes).
    :param kl_coefs: one run per fixed (non-adaptive) per-token KL coefficient.
    :param steps: env steps (tokens) of each run.
    :param evals: checkpoints per run after the start (every ``steps // evals`` steps).
    :param n_eval: completions sampled per held-out prompt at each checkpoint.
    :param n_prompts: held-out prompts used (default: all of the task's test prompts).
    :param seed: the agents' seed; evaluation samples use ``seed + EVAL_SEED_OFFSET`` at every checkpoint.
    :param device: torch device.
    :param learning_rate: PPO's Adam step size (1e-4: 3e-4 collapses the shipped reference to empty completions).
    :param num_envs: episodes per PPO update.
    :param log: progress lines.
    :return: ``runs`` (run name -> checkpoint rows with ``steps``, ``kl``, ``d``, ``proxy``, ``gold``, ``gold_se``
        and the training-side ``train_kl`` / ``train_score``), ``fit_gold`` / ``fit_proxy`` pooled over every
        checkpoint, ``fits`` per run, and the settings.
    """
    import gymnasium as gym

    import aligngym.envs  # noqa: F401  (registers the ids)
    from aligngym.agents.ppo import PPOAgent, PPOConfig
    from aligngym.benchmarks.overopt import _score_flat, fit_form, sample_completions, test_prompts
    from aligngym.envs.scorers import make_scorer
    from aligngym.envs.tasks import get_task

    if steps <= 0 or evals <= 0 or n_eval <= 0:
        raise ValueError(f"steps, evals and n_eval must be positive, got {steps}, {evals}, {n_eval}")
    if not kl_coefs or any(b < 0 for b in kl_coefs):
        raise ValueError(f"kl_coefs must be non-empty and >= 0, got {list(kl_coefs)}")
    prompts, context = test_prompts(task, n_prompts)
    budget = int(get_task(task).max_new_tokens)
    proxy_s, gold_s = make_scorer(proxy, device=device), make_scorer(gold, device=device)
    chunk = steps // evals
    eval_seed = seed + EVAL_SEED_OFFSET

    def checkpoint(agent: Any, done_steps: int) -> dict[str, Any]:
        groups, kl = sample_completions(
            agent.policy, agent.runtime.tokenizer, prompts, n_eval, budget, eval_seed, agent.reference
        )
        assert kl is not None
        g = _score_flat(gold_s, prompts, groups, context).mean(axis=1)
        row: dict[str, Any] = {
            "steps": done_steps,
            "kl": float(max(kl.mean(), 0.0)),
            "proxy": float(_score_flat(proxy_s, prompts, groups, context).mean()),
            "gold": float(g.mean()),
            "gold_se": float(g.std(ddof=1) / math.sqrt(len(g))) if len(g) > 1 else 0.0,
            "train_kl": float(agent.logger.latest("charts/kl")),
            "train_score": float(agent.logger.latest("charts/score")),
        }
        row["d"] = math.sqrt(row["kl"])
        row["example"] = groups[0][0]
        return row

    runs: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    start_row: dict[str, Any] | None = None
    for beta in kl_coefs:
        t0 = time.perf_counter()
        name = f"kl_coef={beta:g}"
        # gold=False: the training env never calls the gold scorer; it is scored on the checkpoints' samples only
        env = gym.make(f"aligngym/{task}-Token-v0", scorer=proxy_s, gold=False, device=device)
        cfg = PPOConfig(
            init_kl_coef=float(beta),
            adaptive_kl=False,
            learning_rate=learning_rate,
            num_envs=num_envs,
            minibatch_size=max(1, num_envs // 2),
            seed=seed,
            device=device,
        )
        agent = PPOAgent(env, cfg)
        if (
            start_row is None
        ):  # every run starts at the reference policy: its checkpoint 0 is the same samples
            start_row = checkpoint(agent, 0)
        rows = [dict(start_row)]
        for _ in range(evals):
            agent.learn(chunk)
            rows.append(checkpoint(agent, int(agent.num_timesteps)))
            r = rows[-1]
            log(f"  {name} step {r['steps']}: KL {r['kl']:.2f} proxy {r['proxy']:.3f} gold {r['gold']:.3f}")
        runs[name] = rows
        seconds[name] = round(time.perf_counter() - t0, 1)
        env.close()
    points = [r for rows in runs.values() for r in rows[1:]]
    assert start_row is not None
    g0, p0 = float(start_row["gold"]), float(start_row["proxy"])
    out: dict[str, Any] = {
        "method": "rl_ppo",
        "steps": steps,
        "evals": evals,
        "n_eval": n_eval,
        "prompts": len(prompts),
        "kl_coefs": [float(b) for b in kl_coefs],
        "learning_rate": learning_rate,
        "num_envs": num_envs,
        "runs": runs,
        "run_seconds": seconds,
    }
    d = [r["d"] for r in points]
    try:
        out["fit_gold"] = fit_form(d, [r["gold"] - g0 for r in points], "rl")
        out["fit_proxy"] = fit_form(d, [r["proxy"] - p0 for r in points], "rl")
    except ValueError as err:
        out["fit_error"] = str(err)
    fits: dict[str, Any] = {}
    for name, rows in runs.items():
        rd = [r["d"] for r in rows[1:]]
        try:
            fits[name] = {
                "gold": fit_form(rd, [r["gold"] - g0 for r in rows[1:]], "rl"),
                "proxy": fit_form(rd, [r["proxy"] - p0 for r in rows[1:]], "rl"),
            }
        except ValueError as err:
            fits[name] = {"error": str(err)}
    out["fits"] = fits
    return out


def peak_gold(rl: dict[str, Any]) -> dict[str, float] | None:
    """Where the pooled gold fit peaks: ``d* = exp(alpha / beta - 1)`` (for beta > 0) and the gold gain there."""
    fit = rl.get("fit_gold")
    if not fit or fit["beta"] <= 0:
        return None
    d_star = float(np.exp(fit["alpha"] / fit["beta"] - 1.0))
    return {"d": d_star, "kl": d_star**2, "gain": fit["beta"] * d_star}
