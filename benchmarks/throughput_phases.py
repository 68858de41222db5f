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
    bare: list[float] = []

    def ours(rep: int) -> None:
        for name, agent in agents.items():
            clock.who = name if rep >= 0 else "warm-up"
            start = time.process_time()
            batch = agent.collect(venvs[name])
            agent.update(batch)
            if rep >= 0:
                clock.seconds[name]["total"] += time.process_time() - start
                tokens[name].append(float(batch["mask"].sum()) / batch["mask"].shape[0])
            if name == "grpo":
                clock.who = "bare"  # (not a phase of any contender)
                ms = bare_model_passes_ms(agent.policy, batch)
                if rep >= 0:
                    bare.append(ms)

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
    bare_ms = sum(bare) / len(bare)
    if "trl" in ms:
        ratios["bare_model_passes_vs_trl"] = ms["trl"]["total"] / bare_ms
    return {"prompts": prompts, "generations": generations, "max_new_tokens": max_new_tokens, "reps": reps,
            "ms": ms, "bare_model_passes_ms": bare_ms, "mean_completion_tokens": mean_tokens,
            "ratios": ratios}  # fmt: skip


def bare_model_passes_ms(policy: Any, batch: dict[str, Any]) -> float:
    """Process-CPU ms of the bare ``transformers`` passes a GRPO update with a KL term runs on ``batch``'s shapes:
    a KV-cached decode of its completions (prompt forward + one step per used token, every row, no sampling), one
    no-grad forward over prompt + completion (the reference), and one forward with grad plus its backward (the
    policy). No env, no scoring, no optimizer, no loss maths beyond the chosen tokens' log-probs. TRL's update time
    over this one bounds the ratio any GRPO implementation on this model in eager ``transformers`` can reach.
    """
    import torch

    from aligngym.agents.policies import trim_left_padding, used_steps
    from aligngym.agents.sampling import positions_from_mask
    from aligngym.envs.hf import cache_kwarg, output_cache

    model = policy.model
    prompt, pmask = trim_left_padding(batch["prompt_ids"], batch["prompt_mask"])
    t = max(used_steps(batch["mask"]), 1)
    tokens = (
        policy.action_ids[batch["actions"][:, :t]]
        if policy.action_ids is not None
        else batch["actions"][:, :t]
    )
    ids = torch.cat([prompt, tokens.long()], dim=1)
    mask = torch.cat([pmask.long(), batch["mask"][:, :t].long()], dim=1)
    pos = positions_from_mask(mask)
    p = prompt.shape[1]
    start = time.process_time()
    with torch.no_grad():
        out = model(input_ids=prompt, attention_mask=pmask.long(), position_ids=pos[:, :p], use_cache=True)
        past = output_cache(out)
        for k in range(t - 1):
            out = model(
                **cache_kwarg(model, past),
                input_ids=tokens[:, k : k + 1],
                attention_mask=mask[:, : p + k + 1],
                position_ids=pos[:, p + k : p + k + 1],
                use_cache=True,
            )
            past = output_cache(out)
        model(input_ids=ids, attention_mask=mask, position_ids=pos)  # the reference's forward
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, p - 1 : -1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    (logp * batch["mask"][:, :t]).sum().backward()
    model.zero_grad(set_to_none=True)
    return (time.process_time() - start) * 1e3


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
    lines.append(
        f"\nbare model passes of the GRPO batch (KV-cached decode, reference forward, policy forward + backward; "
        f"no env, scoring, optimizer or Python around them): {r['bare_model_passes_ms']:.0f} ms"
    )
    for k, v in r["ratios"].items():
        lines.append(f"\n{k.replace('_vs_trl', '')} / TRL completions/s: {v:.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="aligngym throughput_phases", description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5, help="timed updates per contender (default 5)")
    p.add_argument("--no-trl", action="store_true", help="leave TRL's GRPOTrainer out")
    p.add_argument("--prompts", type=int, default=4, help="prompts per update, P (default 4)")
    p.add_argument("--generations", type=int, default=8, help="completions per prompt, G (default 8)")
    p.add_argument("--tokens", type=int, default=16, help="new tokens per completion at most (default 16)")
    args = p.parse_args(None if argv is None else list(argv))
    import torch

    torch.set_num_threads(1)
    r = bench_phases(
        prompts=args.prompts,
        generations=args.generations,
        max_new_tokens=args.tokens,
        reps=args.reps,
        with_trl=not args.no_trl,
    )
    print(f"{args.prompts} prompts x {args.generations} completions, up to {args.tokens} new tokens\n")
    print(format_phases(r))
    return 0


__all__ = ["PHASES", "PhaseClock", "bare_model_passes_ms", "bench_phases", "format_phases", "main"]

if __name__ == "__main__":
    sys.exit(main())
