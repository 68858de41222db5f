"""Where an agent update's time goes: process-CPU ms per phase of our ``GRPOAgent`` and ``PPOAgent`` updates and of
TRL's ``GRPOTrainer`` step, on the same model, reward and batch as part (e) of ``aligngym throughput``.
``python -m aligngym.benchmarks.throughput_phases [--reps 5] [--no-trl]`` prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from aligngym.benchmarks.throughput_agents import _trl_trainer, build_agents, grpo_vector_env

#: phases in table order (a contender without one shows "-")
PHASES = (
    "generate (collect less the env)",
    "env reset + step (scoring)",
    "reference log-probs",
    "old log-probs + values",
    "policy forward (grad)",
    "backward",
    "optimizer step",
)


class PhaseClock:
    """Process-CPU seconds per (contender, phase): wraps methods so that each call adds its time to a phase.

    Phases nest exclusively: time spent in an inner phase (the env step inside a collect) counts for it alone.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.who = ""
        self._undo: list[Callable[[], None]] = []
        self._stack: list[list[Any]] = []  # [label, start] of the open phases, innermost last

    @contextlib.contextmanager
    def phase(self, label: str) -> Iterator[None]:
        now = time.process_time()
        if self._stack:  # pause the enclosing phase
            outer = self._stack[-1]
            self.seconds[self.who][outer[0]] += now - outer[1]
        self._stack.append([label, now])
        try:
            yield
        finally:
            now = time.process_time()
            _, start = self._stack.pop()
            self.seconds[self.who][label] += now - start
            if self._stack:
                self._stack[-1][1] = now

    def wrap(self, obj: Any, name: str, label: Callable[..., str] | str) -> None:
        """Time ``obj.name`` (on the instance, or on the class for a type); ``label(*args)`` may pick the phase."""
        fn = getattr(obj, name)
        had = name in vars(obj)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(label(*args) if callable(label) else label):
                return fn(*args, **kwargs)

        setattr(obj, name, timed)
        self._undo.append(lambda: setattr(obj, name, fn) if had else delattr(obj, name))

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


def bench_phases(
    *, prompts: int = 4, generations: int = 8, max_new_tokens: int = 16, reps: int = 5, with_trl: bool = True
) -> dict[str, Any]:
    """Mean process-CPU ms per update and phase: ``{"ms": {contender: {phase: ms, "total": ms}}, ...}``.

    TRL's trainer drives the loop and our two updates run after each of its steps (the first of each is a warm-up),
    so the three alternate in one process, as in part (e). One torch thread is the caller's choice.
    """
    import torch

    clock = PhaseClock()
    agents = build_agents(
        prompts, generations, max_new_tokens, policy="default", beta=0.04, device="cpu", seed=0
    )
    venvs = {"grpo": grpo_vector_env(agents["grpo"]), "ppo": agents["ppo"]._vector_env()}
    for name, agent in agents.items():
        clock.wrap(venvs[name], "step", "env reset + step (scoring)")
        clock.wrap(venvs[name], "reset", "env reset + step (scoring)")
        clock.wrap(agent, "collect", "generate (collect less the env)")
        clock.wrap(agent.optimizer, "step", "optimizer step")

        def lp_label(model: Any, *args: Any, _agent: Any = agent) -> str:
            if model is _agent.reference:
                return "reference log-probs"
            return "policy forward (grad)" if torch.is_grad_enabled() else "old log-probs + values"

        clock.wrap(agent, "_logprobs", lp_label)
    clock.wrap(torch.Tensor, "backward", "backward")
    tokens: dict[str, list[float]] = defaultdict(list)

    def ours(rep: int) -> None:
        for name, agent in agents.items():
            clock.who = name if rep >= 0 else "warm-up"
            start = time.process_time()
            batch = agent.collect(venvs[name])
            agent.update(batch)
            if rep >= 0:
                clock.seconds[name]["total"] += time.process_time() - start
                tokens[name].append(float(batch["mask"].sum()) / batch["mask"].shape[0])

    trl_lengths: list[float] = []
    try:
        ours(-1)
        if not with_trl:
            for rep in range(reps):
                ours(rep)
        else:
            trl_lengths = _trl_steps(clock, ours, prompts, generations, max_new_tokens, reps)
    finally:
        clock.restore()
    names = [n for n in ("grpo", "trl", "ppo") if n in clock.seconds]
    ms = {n: {k: v / reps * 1e3 for k, v in clock.seconds[n].items()} for n in names}
    mean_tokens = {n: sum(v) / len(v) for n, v in tokens.items()}
    if trl_lengths:
        mean_tokens["trl"] = sum(trl_lengths) / len(trl_lengths)
    ratios = {f"{n}_vs_trl": ms["trl"]["total"] / ms[n]["total"] for n in ("grpo", "ppo") if "trl" in ms}
    return {"prompts": prompts, "generations": generations, "max_new_tokens": max_new_tokens, "reps": reps,
            "ms": ms, "mean_completion_tokens": mean_tokens, "ratios": ratios}  # fmt: skip


def _trl_steps(
    clock: PhaseClock,
    ours: Callable[[int], None],
    prompts: int,
    generations: int,
    max_new_tokens: int,
    reps: int,
) -> list[float]:
    """``reps`` + 1 TRL steps (the first warms up), each followed by one update of ours; TRL's phases timed."""
    import torch
    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        step = 0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            clock.who = "trl" if self.step > 0 else "warm-up"
            self.start = time.process_time()

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.opt = time.process_time()

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            clock.seconds[clock.who]["optimizer step"] += time.process_time() - self.opt

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.step > 0:
                clock.seconds["trl"]["total"] += time.process_time() - self.start
                ours(self.step - 1)
            self.step += 1

    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trl_trainer(
            prompts, generations, max_new_tokens, 0.04, 2e-4, reps + 1, "cpu", tmp, [Steps()], 0
        )
        clock.wrap(trainer, "_generate_and_score_completions", "generate (collect less the env)")
        clock.wrap(trainer, "_calculate_rewards", "env reset + step (scoring)")  # TRL: the reward call

        def lp_label(model: Any, *args: Any) -> str:
            if model is trainer.ref_model:
                return "reference log-probs"
            return "policy forward (grad)" if torch.is_grad_enabled() else "old log-probs + values"

        clock.wrap(trainer, "_get_per_token_logps_and_entropies", lp_label)
        with contextlib.redirect_stdout(sys.stderr):  # TRL prints its log dicts
            trainer.train()
        lengths = [
            h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h
        ]
    return [float(x) for x in lengths[1:]]


def format_phases(r: dict[str, Any]) -> str:
    """Markdown table of :func:`bench_phases`' result."""
    label = {"grpo": "aligngym GRPOAgent", "trl": "TRL GRPOTrainer", "ppo": "aligngym PPOAgent"}
    names = list(r["ms"])
    head = "| phase (CPU ms per update) | " + " | ".join(label[n] for n in names) + " |"
    lines = [head, "|---|" + "---:|" * len(names)]
    for phase in (*PHASES, "other (loss maths, Python)", "total"):
        if phase.startswith("other"):
            cells = [r["ms"][n]["total"] - sum(r["ms"][n].get(k, 0.0) for k in PHASES) for n in names]
        else:
            cells = [r["ms"][n].get(phase) for n in names]
        shown = ["-" if c is None else f"{c:.0f}" for c in cells]
        lines.append(f"| {'**total**' if phase == 'total' else phase} | " + " | ".join(shown) + " |")
    toks = r["mean_completion_tokens"]
    lines.append("| mean completion tokens | " + " | ".join(f"{toks.get(n, 0.0):.1f}" for n in names) + " |")
    for k, v in r["ratios"].items():
        lines.append(f"\n{k.replace('_vs_trl', '')} / TRL completions/s: {v:.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="aligngym throughput_phases", description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5, help="timed updates per contender (default 5)")
    p.add_argument("--no-trl", action="store_true", help="leave TRL's GRPOTrainer out")
    args = p.parse_args(None if argv is None else list(argv))
    import torch

    torch.set_num_threads(1)
    print(format_phases(bench_phases(reps=args.reps, with_trl=not args.no_trl)))
    return 0


__all__ = ["PHASES", "PhaseClock", "bench_phases", "format_phases", "main"]

if __name__ == "__main__":
    sys.exit(main())
