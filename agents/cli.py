"""The command line the agents' ``main()`` functions share: the common flags, then train on an env id, evaluate on
its test split and print the comparison with a baseline (random actions, or the untrained agent itself).

Each algorithm adds its own flags to :func:`agent_parser` and builds its config; :func:`train_and_compare` does the
rest the same way for all (``python -m aligngym.agents.ppo``, ``.grpo``, ``.reinforce``, ``.tabular``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

BASELINES = ("random", "before")


def agent_parser(
    description: str,
    env: str,
    steps: int,
    steps_help: str = "env steps to learn from",
    torch_flags: bool = True,
) -> argparse.ArgumentParser:
    """A parser with the flags every agent's ``main`` takes.

    Flags: ``--env``, ``--steps``, ``--seed``, ``--max-new-tokens``, ``--log-dir``, ``--save``, and with
    ``torch_flags`` also ``--device`` and ``--threads`` (torch CPU threads, default 1).

    :param description: the parser's description (the module docstring's first line).
    :param env: the default env id.
    :param steps: the default budget.
    :param steps_help: what a step is for this agent (tokens, completions ...).
    :param torch_flags: add ``--device`` and ``--threads``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--env", default=env, help="a registered aligngym id")
    parser.add_argument("--steps", type=int, default=steps, help=steps_help)
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="override the task's completion budget"
    )
    parser.add_argument("--save", default=None, help="directory to save the trained agent to")
    add_run_flags(parser, torch_flags=torch_flags)
    return parser


def add_run_flags(parser: argparse.ArgumentParser, torch_flags: bool = True, threads: int = 1) -> None:
    """Add the flags of any training command: ``--seed``, ``--log-dir``, and ``--device`` / ``--threads``.

    :param parser: the parser to extend (also used by ``python -m aligngym.agents.reward_modeling``).
    :param torch_flags: add ``--device`` and ``--threads``.
    :param threads: the default of ``--threads`` (0: torch's own default).
    """
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default=None, help="TensorBoard directory")
    if torch_flags:
        parser.add_argument("--device", default="auto")
        parser.add_argument(
            "--threads", type=int, default=threads, help="torch CPU threads (0: torch's default)"
        )


def env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``gym.make`` options the common flags set (``max_new_tokens``; ``action_vocab`` when the parser has it)."""
    kwargs: dict[str, Any] = {}
    if getattr(args, "max_new_tokens", None) is not None:
        kwargs["max_new_tokens"] = args.max_new_tokens
    if getattr(args, "action_vocab", None):
        kwargs["action_vocab"] = args.action_vocab
    return kwargs


def train_and_compare(
    agent_cls: type,
    config: Any,
    args: argparse.Namespace,
    baseline: str = "random",
    deterministic: bool = True,
    eval_episodes: int | None = None,
) -> dict[str, Any]:
    """Train ``agent_cls(env, config)`` for ``args.steps`` on ``args.env``, evaluate it on the test split and print
    the comparison with ``baseline``.

    :param agent_cls: an :class:`~aligngym.agents.base.Agent` subclass.
    :param config: its config.
    :param args: parsed :func:`agent_parser` flags.
    :param baseline: ``"random"`` (a :class:`~aligngym.agents.base.RandomAgent`, 10 episodes per test prompt) or
        ``"before"`` (the agent itself before training, e.g. the reference LM an LM agent starts from).
    :param deterministic: greedy evaluation of the trained agent (``"before"`` compares both sampled).
    :param eval_episodes: ``None``: every test prompt once.
    :returns: ``{"trained", "baseline", "train_seconds"}`` (each evaluation as :func:`~aligngym.agents.base.evaluate`
        returns it).
    """
    import gymnasium as gym

    import aligngym.envs  # noqa: F401  (registers the ids)
    from aligngym.agents.base import AgentConfig, RandomAgent, evaluate

    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    kwargs = env_kwargs(args)
    env = gym.make(args.env, **kwargs)
    test_env = gym.make(args.env, split="test", **kwargs)
    agent = agent_cls(env, config)
    before = None
    if baseline == "before":
        deterministic = False
        before = evaluate(agent, test_env, n_episodes=eval_episodes, deterministic=False, seed=args.seed)
    t0 = time.perf_counter()
    agent.learn(args.steps)
    train_s = time.perf_counter() - t0
    if args.save:
        agent.save(args.save)
    trained = evaluate(agent, test_env, n_episodes=eval_episodes, deterministic=deterministic, seed=args.seed)
    if before is None:
        n_random = eval_episodes or 10 * len(test_env.unwrapped.runtime.rows)  # type: ignore[attr-defined]
        random_agent = RandomAgent(test_env, AgentConfig(seed=args.seed))
        before = evaluate(random_agent, test_env, n_episodes=n_random, deterministic=False)
    updates = getattr(agent, "num_updates", None)
    detail = f", {updates} updates" if updates is not None else ""
    print(f"{args.env}: {agent.num_timesteps} steps{detail} in {train_s:.1f} s on {agent.device}")
    label = getattr(agent, "policy_label", None)
    name = agent.algo_name + (f" (from {label})" if label else "")
    other = "untrained" if baseline == "before" else "random"
    for who, res in ((name, trained), (other, before)):
        print(
            f"{who:>24}: test score {res['mean_score']:.3f} +- {res['std_score']:.3f}, "
            f"return {res['mean_return']:.3f} +- {res['std_return']:.3f} (population std)"
        )
    for prompt, completion in trained["completions"][:3]:
        print(f"  {prompt!r} -> {completion!r}")
    agent.logger.close()
    return {"trained": trained, "baseline": before, "train_seconds": train_s}


__all__ = ["BASELINES", "add_run_flags", "agent_parser", "env_kwargs", "train_and_compare"]
