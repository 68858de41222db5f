"""Completions/s of whole agent updates (rollout + scoring + optimisation): our ``GRPOAgent`` and ``PPOAgent`` and,
when ``trl`` is installed, TRL's ``GRPOTrainer`` on the same model, reward and batch (part (e) of ``aligngym
throughput``). The TRL trainer drives the loop; our updates run between its steps, so all contenders alternate.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from typing import Any

import gymnasium as gym

from aligngym.benchmarks.timing import Sample, Stopwatch, _median, _ratio, _summary, alternate

TASK = "Sentiment"
#: target: our GRPO update >= 4x TRL GRPOTrainer completions/s
AGENT_TARGETS = {"e_grpo_vs_trl": 4.0}


def peak_memory_mb(device: str) -> float:
    """Peak memory so far: ``torch.cuda.max_memory_allocated`` on CUDA, else this process's peak RSS (MiB)."""
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.max_memory_allocated()) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def build_agents(
    prompts: int, generations: int, max_new_tokens: int, *, policy: Any, beta: float, device: str, seed: int
) -> dict[str, Any]:
    """Our GRPO agent (Sentiment-Sequence, P groups of G) and PPO agent (native Sentiment-Token vector env of P x G
    rows, batch autoreset): the VADER ``sentiment`` reward, no gold scorer (TRL computes none).
    """
    import aligngym.envs  # noqa: F401  (registers the ids)
    from aligngym.agents.grpo import GRPOAgent, GRPOConfig
    from aligngym.agents.ppo import PPOAgent, PPOConfig

    common: dict[str, Any] = {"scorer": "sentiment", "gold": False, "max_new_tokens": max_new_tokens}
    grpo = GRPOAgent(
        gym.make(f"aligngym/{TASK}-Sequence-v0", **common),
        GRPOConfig(
            policy=policy,
            num_generations=generations,
            prompts_per_update=prompts,
            beta=beta,
            device=device,
            seed=seed,
        ),
    )
    n = prompts * generations
    venv = gym.make_vec(f"aligngym/{TASK}-Token-v0", num_envs=n, autoreset_mode="batch", **common)
    ppo = PPOAgent(venv, PPOConfig(policy=policy, num_envs=n, device=device, seed=seed))
    return {"grpo": grpo, "ppo": ppo}


def grpo_vector_env(agent: Any) -> Any:
    """The native vector env of all P x G rows of a GRPO update (one env step scores the whole batch, as
    ``GRPOAgent.collect`` does with it), on the agent's task and options, no gold scorer."""
    rt, cfg = agent.runtime, agent.config
    n = cfg.prompts_per_update * cfg.num_generations
    return gym.make_vec(
        f"aligngym/{TASK}-Sequence-v0",
        num_envs=n,
        scorer="sentiment",
        gold=False,
        max_new_tokens=rt.max_new_tokens,
    )


def agent_update(agent: Any, venv: Any, device: str, rep: int = 0) -> Sample:
    """One ``collect`` + ``update`` of ``agent``; work = completions (episodes) in the batch."""
    from aligngym.benchmarks.throughput_lm import _sync

    _sync(device)
    watch = Stopwatch()
    batch = agent.collect(venv)
    agent.update(batch)
    _sync(device)
    on_cpu = not device.startswith("cuda")
    return Sample(len(batch["episode_returns"]), watch.wall(), watch.cpu() if on_cpu else None)


def _trl_trainer(
    prompts: int,
    generations: int,
    max_new_tokens: int,
    beta: float,
    learning_rate: float,
    steps: int,
    device: str,
    out_dir: str,
    callbacks: list[Any],
    seed: int,
) -> Any:
    """TRL's ``GRPOTrainer`` on the shipped reference LM, Sentiment train prompts and the VADER scorer."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    from trl import GRPOConfig, GRPOTrainer

    from aligngym.envs.reference import default_reference_dir
    from aligngym.envs.scorers import make_scorer
    from aligngym.envs.tasks import get_task, load_prompt_rows
    from aligngym.envs.tokenization import DEFAULT_EOS, DEFAULT_PAD, default_tokenizer_path

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(default_tokenizer_path()),
        eos_token=DEFAULT_EOS,
        bos_token=DEFAULT_EOS,
        pad_token=DEFAULT_PAD,
    )
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(default_reference_dir()), local_files_only=True)
    rows = load_prompt_rows(get_task(TASK), split="train")
    config = GRPOConfig(
        output_dir=out_dir,
        use_cpu=not device.startswith("cuda"),
        max_steps=steps,
        per_device_train_batch_size=prompts * generations,
        num_generations=generations,
        max_completion_length=max_new_tokens,
        learning_rate=learning_rate,
        beta=beta,
        temperature=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        disable_tqdm=True,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=[make_scorer("sentiment").as_trl_reward_func()],
        args=config,
        train_dataset=Dataset.from_list([{"prompt": r["prompt"]} for r in rows]),
        processing_class=tok,
        callbacks=callbacks,
    )


def bench_agents(
    *,
    prompts: int = 4,
    generations: int = 8,
    max_new_tokens: int = 16,
    reps: int = 5,
    policy: Any = "default",
    beta: float = 0.04,
    device: str = "cpu",
    with_trl: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Completions/s of one update of each contender (median of ``reps`` alternating repetitions after a warm-up).

    :param prompts: P, prompts per update (GRPO groups; TRL: per_device_train_batch_size = P x G).
    :param generations: G, completions per prompt.
    :param max_new_tokens: completion budget (TRL: ``max_completion_length``).
    :param reps: timed repetitions per contender.
    :param policy: the starting policy of our agents (``"default"``: the shipped reference LM, which TRL gets too).
    :param beta: KL weight of both GRPOs (ours and TRL's).
    :param device: ``"cpu"`` or ``"cuda"``.
    :param with_trl: include TRL's ``GRPOTrainer`` when ``trl`` is installed.
    """
    import torch

    torch.manual_seed(seed)
    agents = build_agents(
        prompts, generations, max_new_tokens, policy=policy, beta=beta, device=device, seed=seed
    )
    venvs = {name: grpo_vector_env(a) if name == "grpo" else a._vector_env() for name, a in agents.items()}
    ours: dict[str, Callable[[int], Sample]] = {
        f"{name}_update": partial(agent_update, a, venvs[name], device) for name, a in agents.items()
    }
    peaks: dict[str, float] = {}

    def timed(name: str, fn: Callable[[int], Sample], rep: int) -> Sample:
        _reset_peak(device)
        out = fn(rep)
        peaks[name] = max(peaks.get(name, 0.0), peak_memory_mb(device))
        return out

    note = None
    trl_version = None
    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        note = "trl is not installed: TRL's GRPOTrainer skipped (pip install trl)"
    if not with_trl and note is None:
        note = "TRL's GRPOTrainer skipped (with_trl=False)"
    for fn in ours.values():  # warm up
        fn(-1)
    if note is not None:
        samples = alternate({k: partial(timed, k, f) for k, f in ours.items()}, reps)
    else:
        samples = {"trl_grpo_trainer": [], **{k: [] for k in ours}}
        from transformers import TrainerCallback

        class Alternate(TrainerCallback):
            """Times each TRL step; after it, runs one update of each of our agents (so all alternate)."""

            step = 0

            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                _reset_peak(device)
                self.watch = Stopwatch()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                wall, cpu = self.watch.wall(), self.watch.cpu()
                peaks["trl_grpo_trainer"] = max(peaks.get("trl_grpo_trainer", 0.0), peak_memory_mb(device))
                if self.step > 0:  # the first step warms TRL up
                    on_cpu = not device.startswith("cuda")
                    samples["trl_grpo_trainer"].append(
                        Sample(prompts * generations, wall, cpu if on_cpu else None)
                    )
                    for k, f in ours.items():
                        samples[k].append(timed(k, f, self.step))
                self.step += 1

        with tempfile.TemporaryDirectory() as tmp:
            trainer = _trl_trainer(
                prompts, generations, max_new_tokens, beta, 2e-4, reps + 1, device, tmp, [Alternate()], seed
            )
            with contextlib.redirect_stdout(
                sys.stderr
            ):  # TRL prints its log dicts on CPU: keep stdout the report
                trainer.train()
            lengths = [
                h["completions/mean_length"]
                for h in trainer.state.log_history
                if "completions/mean_length" in h
            ]
    summary = _summary(samples)
    rates = summary["rates"]
    ratios = {
        clock: (
            {f"{k}_vs_trl": _ratio(r[k], r.get("trl_grpo_trainer")) for k in ours} if note is None else {}
        )
        for clock, r in rates.items()
    }
    return {
        "prompts": prompts,
        "generations": generations,
        "max_new_tokens": max_new_tokens,
        "beta": beta,
        "policy": str(policy),
        "trl": trl_version,
        "note": note,
        "trl_mean_completion_length": _median(lengths[1:]) if note is None and len(lengths) > 1 else None,
        "completions_per_s": rates,
        "ratios": ratios,
        "peak_memory_mb": peaks,
        "memory_kind": "torch.cuda.max_memory_allocated" if device.startswith("cuda") else "process peak RSS",
        "samples": summary["samples"],
    }


def format_agents(r: dict[str, Any], clock: str) -> list[str]:
    """Markdown lines of :func:`bench_agents`'s result."""
    n = r["prompts"] * r["generations"]
    lines = [
        f"**(e) agent updates** ({r['prompts']} prompts x {r['generations']} completions = {n} per update, "
        f"{r['max_new_tokens']} new tokens, VADER reward, policy {r['policy']}, KL beta {r['beta']}; "
        f"rollout + scoring + optimisation; {clock} clock)",
        "",
        f"| contender | completions/s | vs TRL GRPOTrainer | {r['memory_kind']} (MiB, running peak) |",
        "|---|---:|---:|---:|",
    ]
    label = {
        "grpo_update": "aligngym `GRPOAgent` (collect + update, one env step of P x G rows)",
        "ppo_update": "aligngym `PPOAgent` (collect + update, 4 epochs)",
        "trl_grpo_trainer": f"TRL {r['trl']} `GRPOTrainer` step",
    }
    for k, rate in r["completions_per_s"][clock].items():
        ratio = r["ratios"][clock].get(f"{k}_vs_trl")
        mem = r["peak_memory_mb"].get(k)
        lines.append(
            f"| {label.get(k, k)} | {'-' if rate is None else f'{rate:.1f}'} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} | {'-' if mem is None else f'{mem:,.0f}'} |"
        )
    if r["note"]:
        lines += ["", f"Note: {r['note']}."]
    if r.get("trl_mean_completion_length") is not None:
        lines += [
            "",
            f"TRL's completions stop at EOS: median mean length {r['trl_mean_completion_length']:.1f} tokens.",
        ]
    return lines


__all__ = [
    "AGENT_TARGETS",
    "agent_update",
    "bench_agents",
    "build_agents",
    "format_agents",
    "grpo_vector_env",
    "peak_memory_mb",
]


if __name__ == "__main__":  # a quick look: python -m aligngym.benchmarks.throughput_agents
    import json

    import torch

    torch.set_num_threads(1)
    res = bench_agents(reps=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    print("\n".join(format_agents(res, "cpu")))
    print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=1, default=str))
