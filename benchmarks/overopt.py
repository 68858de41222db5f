"""Goodhart curves (Gao et al. 2022): gold and proxy reward against d = sqrt(KL) from the reference policy.

Best-of-n samples N completions per held-out prompt from the shipped reference LM, keeps the proxy's best of n
(unbiased estimator over the N samples) and uses the analytic KL ``log n - (n - 1) / n``; RL runs (PPO at several
fixed KL coefficients, :mod:`aligngym.benchmarks.overopt_rl`) measure KL on their evaluation completions. Both are
fitted with the paper's forms (best-of-n ``d (alpha - beta d)``, RL ``d (alpha - beta log d)``) and written as JSON,
CSV, Markdown and PNG.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: the Gao et al. functional forms, as the names used in the outputs
FORMS = {"bon": "d*(alpha - beta*d)", "rl": "d*(alpha - beta*log(d))"}


# -- fitting ----------------------------------------------------------------------------------------------------------
def bon_kl(n: int | np.ndarray) -> np.ndarray:
    """Analytic KL(best-of-n || reference) = log n - (n - 1) / n (nats), for n >= 1."""
    arr = np.asarray(n, dtype=np.float64)
    if np.any(arr < 1):
        raise ValueError(f"n must be >= 1, got {n}")
    return np.log(arr) - (arr - 1.0) / arr


def fit_form(d: Sequence[float], gain: Sequence[float], form: str) -> dict[str, float]:
    """Least-squares ``alpha``, ``beta`` of ``gain = d (alpha - beta d)`` (``"bon"``) or ``d (alpha - beta log d)``
    (``"rl"``); ``gain`` is the score minus its value at d = 0. Points with d = 0 carry no information and are
    skipped. Returns ``alpha``, ``beta``, ``r2`` and the number of points used.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {sorted(FORMS)}, got {form!r}")
    x = np.asarray(d, dtype=np.float64)
    y = np.asarray(gain, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"d and gain must have the same shape, got {x.shape} and {y.shape}")
    keep = x > 0
    x, y = x[keep], y[keep]
    if len(x) < 2:
        raise ValueError(f"need at least 2 points with d > 0 to fit, got {len(x)}")
    second = -x * x if form == "bon" else -x * np.log(x)
    design = np.stack([x, second], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, y, rcond=None)
    pred = design @ np.array([alpha, beta])
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    return {"alpha": float(alpha), "beta": float(beta), "r2": r2, "points": len(x)}


def form_value(d: np.ndarray, form: str, alpha: float, beta: float) -> np.ndarray:
    """The fitted curve at ``d`` (0 at d = 0)."""
    d = np.asarray(d, dtype=np.float64)
    if form == "bon":
        return d * (alpha - beta * d)
    safe = np.where(d > 0, d, 1.0)
    return np.where(d > 0, d * (alpha - beta * np.log(safe)), 0.0)


def best_of_n(proxy: np.ndarray, gold: np.ndarray, n: int) -> tuple[float, float]:
    """Expected (proxy, gold) of the proxy-best of n draws without replacement from N samples (unbiased).

    Sorting by proxy ascending, sample i (1-based) is the best of a random n-subset with probability
    ``C(i-1, n-1) / C(N, n)``.
    """
    p = np.asarray(proxy, dtype=np.float64)
    g = np.asarray(gold, dtype=np.float64)
    big_n = len(p)
    if not 1 <= n <= big_n or g.shape != p.shape:
        raise ValueError(f"need 1 <= n <= N={big_n} and matching shapes, got n={n}, {p.shape}, {g.shape}")
    order = np.argsort(p, kind="stable")
    total = math.comb(big_n, n)
    w = np.array([math.comb(i - 1, n - 1) / total for i in range(1, big_n + 1)])
    return float(w @ p[order]), float(w @ g[order])


# -- sampling ---------------------------------------------------------------------------------------------------------
def _left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[Any, Any]:
    import torch

    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.as_tensor(list(r), dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


def sample_completions(
    policy: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    n: int,
    max_new_tokens: int,
    seed: int = 0,
    reference: Any = None,
    batch_size: int = 256,
) -> tuple[list[list[str]], np.ndarray | None]:
    """``n`` sampled completions per prompt from a :class:`~aligngym.agents.policies.CausalLMPolicy` (temperature 1).

    :param tokenizer: the policy's :class:`~aligngym.envs.tokenization.TextTokenizer` (prompts in, completions out).

    :param reference: a frozen ``CausalLMPolicy``; when given, also returns KL per completion: float64 (P, n), the
        sum over tokens of log pi - log pi_ref.
    :return: ``(texts[p][k], kl or None)``.
    """
    import torch

    tok = tokenizer
    eos = tok.eos_id
    encoded = [tok.encode(p) for p in prompts]
    flat = [i for i in range(len(prompts)) for _ in range(n)]
    gen = torch.Generator(device=str(policy.device)).manual_seed(int(seed))
    texts: list[str] = []
    kls: list[float] = []
    for start in range(0, len(flat), batch_size):
        idx = flat[start : start + batch_size]
        ids, mask = _left_pad([encoded[i] for i in idx], tok.pad_id)
        ids, mask = ids.to(policy.device), mask.to(policy.device)
        out = policy.sample(ids, mask, max_new_tokens, eos_action=eos, generator=gen)
        for r in range(len(idx)):
            length = int(out.lengths[r])
            toks = out.tokens[r, :length].tolist()
            if toks and eos is not None and toks[-1] == eos:
                toks = toks[:-1]
            texts.append(tok.decode(toks))
        if reference is not None:
            with torch.no_grad():
                lp = policy.completion_logprobs(ids, mask, out.actions, out.mask, with_entropy=False)[0]
                lr = reference.completion_logprobs(ids, mask, out.actions, out.mask, with_entropy=False)[0]
            kls.extend((lp - lr).sum(-1).double().cpu().tolist())
    grouped = [texts[i * n : (i + 1) * n] for i in range(len(prompts))]
    kl = np.asarray(kls, dtype=np.float64).reshape(len(prompts), n) if reference is not None else None
    return grouped, kl


@contextlib.contextmanager
def shared_embeddings() -> Iterator[dict[Any, np.ndarray]]:
    """Within the block, every :class:`~aligngym.envs.scorers.embedding.SentenceEncoder` embeds each distinct text
    once: the gold and every MiniLM-based proxy read the same completions, so a run embeds them once, not per scorer.
    """
    from aligngym.envs.scorers.embedding import SentenceEncoder

    original = SentenceEncoder.encode
    cache: dict[Any, np.ndarray] = {}

    def encode(self: Any, texts: Sequence[str], normalize: bool | None = None) -> np.ndarray:
        norm = self.normalize if normalize is None else bool(normalize)
        key = (str(self.model_dir), self.max_length, norm)
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if (key, t) not in cache))
        if missing:
            for t, v in zip(missing, original(self, missing, normalize=norm)):
                cache[(key, t)] = v
        if not texts:
            return original(self, texts, normalize=norm)
        return np.stack([cache[(key, t)] for t in texts])

    SentenceEncoder.encode = encode
    try:
        yield cache
    finally:
        SentenceEncoder.encode = original


# -- the protocol -----------------------------------------------------------------------------------------------------
def _score_flat(
    scorer: Any, prompts: Sequence[str], groups: list[list[str]], context: Mapping[str, list[Any]]
) -> np.ndarray:
    n = len(groups[0])
    flat_p = [p for p in prompts for _ in range(n)]
    flat_c = [c for g in groups for c in g]
    ctx = {k: [v for v in vals for _ in range(n)] for k, vals in context.items()}
    return np.asarray(scorer(flat_p, flat_c, **ctx), dtype=np.float64).reshape(len(prompts), n)


def test_prompts(task: str, n_prompts: int | None = None) -> tuple[list[str], dict[str, list[Any]]]:
    """Held-out (test) prompts of a shipped task and their context columns."""
    from aligngym.envs.tasks import data_path, get_task, read_jsonl

    t = get_task(task)
    if t.prompt_file is None:
        raise ValueError(f"task {task!r} has no shipped prompt set")
    rows = [r for r in read_jsonl(data_path(t.prompt_file)) if r.get("split", "train") == "test"]
    rows = rows[:n_prompts] if n_prompts else rows
    keys = sorted({k for r in rows for k in r if k not in ("prompt", "split")})
    return [r["prompt"] for r in rows], {k: [r.get(k) for r in rows] for k in keys}


def _read_cache(
    cache: str | Path | None, key: Mapping[str, Any]
) -> tuple[list[list[str]], np.ndarray] | None:
    """The cached (samples, gold scores) of a best-of-n run when ``cache`` exists and its key equals ``key``."""
    if cache is None or not Path(cache).exists():
        return None
    data = json.loads(Path(cache).read_text(encoding="utf-8"))
    if data.get("key") != dict(key):
        return None
    return data["groups"], np.asarray(data["gold"], dtype=np.float64)


def run_best_of_n(
    task: str,
    proxies: Mapping[str, Any],
    gold: Any,
    n_max: int = 256,
    n_prompts: int | None = None,
    max_new_tokens: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    cache: str | Path | None = None,
) -> dict[str, Any]:
    """Best-of-n curves for every proxy on the test prompts of ``task``: n = 1, 2, 4, ..., n_max.

    :param proxies: name -> scorer (anything ``make_scorer`` takes).
    :param gold: the gold scorer (anything ``make_scorer`` takes).
    :param cache: a JSON file holding the samples and their gold scores: read when its key (task, gold, n_max,
        prompts, token budget, seed) matches this run, else written after sampling and gold scoring.
    """
    from aligngym.agents.policies import CausalLMPolicy
    from aligngym.envs.scorers import make_scorer
    from aligngym.envs.tasks import get_task

    prompts, context = test_prompts(task, n_prompts)
    budget = int(max_new_tokens or get_task(task).max_new_tokens)
    from aligngym.envs.tokenization import load_tokenizer

    key = {
        "task": task,
        "gold": gold if isinstance(gold, str) else getattr(gold, "name", str(gold)),
        "n_max": n_max,
        "prompts": prompts,
        "max_new_tokens": budget,
        "seed": seed,
    }
    cached = _read_cache(cache, key)
    start = time.perf_counter()
    if cached is None:
        policy = CausalLMPolicy("default", value_head=False).to(device).eval()
        groups, _ = sample_completions(policy, load_tokenizer("default"), prompts, n_max, budget, seed=seed)
        g = _score_flat(make_scorer(gold, device=device), prompts, groups, context)
        if cache is not None:
            Path(cache).write_text(
                json.dumps({"key": key, "groups": groups, "gold": g.tolist()}), encoding="utf-8"
            )
    else:
        groups, g = cached
    sample_s = time.perf_counter() - start
    ns = sorted({min(2**k, n_max) for k in range(int(math.log2(n_max)) + 1)} | {1, n_max})
    curves: dict[str, Any] = {}
    for name, spec in proxies.items():
        p = _score_flat(make_scorer(spec, device=device), prompts, groups, context)
        rows = []
        for n in ns:
            pairs = np.array([best_of_n(p[i], g[i], n) for i in range(len(prompts))])
            rows.append(
                {
                    "n": n,
                    "kl": float(bon_kl(n)),
                    "d": float(math.sqrt(bon_kl(n))),
                    "proxy": float(pairs[:, 0].mean()),
                    "gold": float(pairs[:, 1].mean()),
                    "gold_se": float(pairs[:, 1].std(ddof=1) / math.sqrt(len(prompts)))
                    if len(prompts) > 1
                    else 0.0,
                }
            )
        d = [r["d"] for r in rows]
        curves[name] = {
            "points": rows,
            "fit_gold": fit_form(d, [r["gold"] - rows[0]["gold"] for r in rows], "bon"),
            "fit_proxy": fit_form(d, [r["proxy"] - rows[0]["proxy"] for r in rows], "bon"),
        }
    examples = {p: groups[i][:3] for i, p in enumerate(prompts[:2])}
    return {
        "method": "best_of_n",
        "n_max": n_max,
        "prompts": len(prompts),
        "max_new_tokens": budget,
        "sample_seconds": round(sample_s, 2),
        "cached_samples": cached is not None,
        "curves": curves,
        "examples": examples,
    }


def machine() -> str:
    """A one-line description of this machine (CPU count, torch build, CUDA device if any)."""
    import os
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}"


def run_overopt(
    task: str,
    proxies: Mapping[str, Any] | None = None,
    gold: Any = None,
    n_max: int = 256,
    n_prompts: int | None = None,
    max_new_tokens: int | None = None,
    rl_steps: int = 0,
    kl_coefs: Sequence[float] = (0.02, 0.1, 0.5),
    seed: int = 0,
    device: str = "cpu",
    command: str = "",
    log: Callable[[str], None] = print,
    best_of_n_part: bool = True,
    rl_options: Mapping[str, Any] | None = None,
    cache: str | Path | None = None,
) -> dict[str, Any]:
    """The whole protocol for one task: best-of-n for every proxy, then (``rl_steps > 0``) PPO against the first one.

    :param proxies: name -> scorer spec; ``None``: :func:`aligngym.benchmarks.overopt_proxies.default_proxies` for
        best-of-n, the task's own reward for an RL-only run.
    :param gold: gold scorer spec; ``None``: the task's gold (``TASK_GOLD``).
    :param best_of_n_part: run best-of-n (``False``: RL only; the result then has no ``best_of_n`` key).
    :param rl_options: further :func:`~aligngym.benchmarks.overopt_rl.run_rl` options (``evals``, ``n_eval``,
        ``learning_rate``, ``num_envs``).
    :param cache: best-of-n only: a JSON file of the samples and their gold scores, reused when it matches the run
        (the samples and gold do not depend on the proxies, so a new proxy costs only its own scoring).
    """
    with shared_embeddings():
        return _run_overopt(
            task,
            proxies,
            gold,
            n_max,
            n_prompts,
            max_new_tokens,
            rl_steps,
            kl_coefs,
            seed,
            device,
            command,
            log,
            best_of_n_part,
            dict(rl_options or {}),
            cache,
        )


def _run_overopt(
    task: str,
    proxies: Mapping[str, Any] | None,
    gold: Any,
    n_max: int,
    n_prompts: int | None,
    max_new_tokens: int | None,
    rl_steps: int,
    kl_coefs: Sequence[float],
    seed: int,
    device: str,
    command: str,
    log: Callable[[str], None],
    best_of_n_part: bool,
    rl_options: dict[str, Any],
    cache: str | Path | None,
) -> dict[str, Any]:
    from aligngym.envs.scorers.gold import TASK_GOLD

    start = time.perf_counter()
    gold = gold if gold is not None else TASK_GOLD[task]
    result: dict[str, Any] = {
        "task": task,
        "gold": gold if isinstance(gold, str) else getattr(gold, "name", str(gold)),
        "seed": seed,
    }
    if best_of_n_part:
        if proxies is None:
            from aligngym.benchmarks.overopt_proxies import default_proxies

            log(f"training the {task} proxies ...")
            proxies = default_proxies(task, seed=seed, device=device)
        log(f"best-of-n on {task}: n up to {n_max}, proxies {list(proxies)}")
        bon = run_best_of_n(task, proxies, gold, n_max, n_prompts, max_new_tokens, seed, device, cache)
        bon.update(seconds=round(time.perf_counter() - start, 1), machine=machine(), command=command)
        result["best_of_n"] = bon
    if rl_steps > 0:
        from aligngym.benchmarks.overopt_proxies import TASK_PROXY
        from aligngym.benchmarks.overopt_rl import run_rl
        from aligngym.envs.tasks import get_task

        t0 = time.perf_counter()
        own = TASK_PROXY.get(task, (get_task(task).scorer, get_task(task).scorer))
        first, spec = next(iter(proxies.items())) if proxies else own
        log(f"PPO on {task} against {first}: KL coefficients {list(kl_coefs)}, {rl_steps} steps each")
        rl = run_rl(
            task,
            spec,
            gold,
            kl_coefs,
            rl_steps,
            n_prompts=n_prompts,
            seed=seed,
            device=device,
            log=log,
            **rl_options,
        )
        rl.update(proxy=first, seconds=round(time.perf_counter() - t0, 1), machine=machine(), command=command)
        result["rl"] = rl
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["machine"] = machine()
    result["command"] = command
    return result


def merge_results(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` with the parts (``best_of_n``, ``rl``) it did not run taken from ``old`` (the same task and gold).

    Each part keeps its own ``command``, ``machine`` and ``seconds``, so a merged file still says how each was made.
    """
    if old.get("task") != new.get("task") or old.get("gold") != new.get("gold"):
        raise ValueError(
            f"cannot merge results of task/gold {old.get('task')}/{old.get('gold')} into "
            f"{new.get('task')}/{new.get('gold')}"
        )
    out = dict(new)
    for part in ("best_of_n", "rl"):
        if part not in out and part in old:
            kept = dict(old[part])
            for key in ("command", "machine", "seconds"):  # results written before parts carried their own
                kept.setdefault(key, old.get(key))
            out[part] = kept
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m aligngym.benchmarks.overopt --env Sentiment --out DIR`` (``aligngym overopt``)."""
    import sys

    parser = argparse.ArgumentParser(prog="aligngym overopt", description=__doc__)
    parser.add_argument(
        "--env", required=True, help="task name (Sentiment, Preference, Keywords, Similarity)"
    )
    parser.add_argument(
        "--proxies", nargs="*", default=None, help="proxy scorer names (default: trained proxies)"
    )
    parser.add_argument("--gold", default=None, help="gold scorer name (default: the task's gold)")
    parser.add_argument("--n-max", type=int, default=256, help="largest n of best-of-n (a power of 2)")
    parser.add_argument("--n-prompts", type=int, default=None, help="test prompts (default: all)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--rl-steps", type=int, default=0, help="PPO env steps per KL setting (0: no RL)")
    parser.add_argument("--kl-coefs", type=float, nargs="*", default=[0.02, 0.1, 0.5])
    parser.add_argument(
        "--rl-evals", type=int, default=4, help="checkpoints per PPO run (each gives a point)"
    )
    parser.add_argument(
        "--rl-samples", type=int, default=8, help="completions per test prompt per checkpoint"
    )
    parser.add_argument("--rl-lr", type=float, default=1e-4, help="PPO learning rate")
    parser.add_argument("--rl-envs", type=int, default=16, help="episodes per PPO update")
    parser.add_argument(
        "--part",
        choices=["all", "best-of-n", "rl"],
        default="all",
        help="run one part and keep the other from OUT/TASK/overopt.json (default: all; 'rl' needs --rl-steps)",
    )
    parser.add_argument("--cache", default=None, help="best-of-n samples + gold scores cache (JSON file)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="overopt_results")
    args = parser.parse_args(argv)
    if args.part == "rl" and args.rl_steps <= 0:
        parser.error(f"--part rl needs --rl-steps > 0, got {args.rl_steps}")
    task = args.env.split("/")[-1].split("-")[0]
    proxies = {p: p for p in args.proxies} if args.proxies else None
    command = "python -m aligngym.benchmarks.overopt " + " ".join(sys.argv[1:] if argv is None else argv)
    result = run_overopt(
        task,
        proxies,
        args.gold,
        args.n_max,
        args.n_prompts,
        args.max_new_tokens,
        args.rl_steps if args.part != "best-of-n" else 0,
        args.kl_coefs,
        args.seed,
        args.device,
        command,
        best_of_n_part=args.part != "rl",
        rl_options={
            "evals": args.rl_evals,
            "n_eval": args.rl_samples,
            "learning_rate": args.rl_lr,
            "num_envs": args.rl_envs,
        },
        cache=args.cache,
    )
    from aligngym.benchmarks.overopt_report import write_outputs

    previous = Path(args.out) / task / "overopt.json"
    if args.part != "all" and previous.exists():
        result = merge_results(json.loads(previous.read_text(encoding="utf-8")), result)
    files = write_outputs(result, Path(args.out) / task)
    print(files["md"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(f) for f in files.values()))
    return 0


def write_outputs(result: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write JSON, CSV, Markdown and PNG (see :func:`aligngym.benchmarks.overopt_report.write_outputs`)."""
    from aligngym.benchmarks.overopt_report import write_outputs as _write

    return _write(result, out)


def __getattr__(name: str) -> Any:
    """``run_rl`` lives in :mod:`aligngym.benchmarks.overopt_rl` (kept importable from here)."""
    if name == "run_rl":
        from aligngym.benchmarks.overopt_rl import run_rl

        return run_rl
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(main())
