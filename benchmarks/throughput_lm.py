"""Rollout micro-benchmarks with our own policy: tokens/s of a :class:`CausalLMPolicy` rolling out through the env API
vs ``model.generate`` on the same model, and the env's share of each step.

The policy is the library's ``CausalLMPolicy`` (KV-cached ``begin`` / ``extend``) over a ``tiny_causal_lm``: what
PPO and GRPO roll out with, not a copy of it. :func:`bench_rollout` is parts (b) and (c) of ``aligngym throughput``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from aligngym.benchmarks.timing import CLOCKS, Sample, Stopwatch, _median, _rate, _ratio, _summary, alternate


def rollout_policy(
    vocab_size: int,
    n_positions: int,
    *,
    n_layer: int = 2,
    n_embd: int = 128,
    eos_id: int | None = None,
    seed: int = 0,
) -> Any:
    """Our rollout policy for the benchmark: ``CausalLMPolicy`` (no value head) over a random ``tiny_causal_lm``.

    :param vocab_size: the env's V (``len(tokenizer)``).
    :param n_positions: longest prompt + completion in tokens.
    :param n_layer: transformer blocks.
    :param n_embd: width (4 heads).
    :param eos_id: the env's EOS id (recorded in the model config).
    :param seed: initial weights.
    """
    from aligngym.agents.policies import CausalLMPolicy, tiny_causal_lm

    model = tiny_causal_lm(
        vocab_size,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=4,
        n_positions=n_positions,
        seed=seed,
        eos_token_id=eos_id,
    )
    return CausalLMPolicy(model, tokenizer=vocab_size, value_head=False).eval()


def tiny_gpt2(
    vocab_size: int, n_positions: int, *, n_layer: int = 2, n_embd: int = 128, seed: int = 0
) -> Any:
    """Deprecated: the ``transformers`` model of :func:`rollout_policy` (``tiny_causal_lm`` with 4 heads)."""
    return rollout_policy(vocab_size, n_positions, n_layer=n_layer, n_embd=n_embd, seed=seed).model


class RolloutTimes(NamedTuple):
    """What :func:`policy_env_rollout` reports: tokens generated and the time spent inside env calls."""

    tokens: int
    env_wall: float
    env_cpu: float


def policy_env_rollout(
    policy: Any, venv: Any, *, seed: int, suppress_ids: Sequence[int] = (), device: str = "cpu"
) -> RolloutTimes:
    """One batch of completions sampled by ``policy`` through the env API, KV-cached with ``begin`` / ``extend``.

    The env must be in batch autoreset mode (``autoreset_mode="batch"``): ``reset``, then step until every row has
    ended. The prompt is read from the observation (``input_ids[:, :max_prompt_tokens]``, left-padded), each new
    token from the column the env wrote; sampling is plain multinomial over softmax(logits) with ``suppress_ids``
    (e.g. EOS) masked.

    :param policy: a :class:`~aligngym.agents.policies.CausalLMPolicy` acting on token ids (or a ``transformers``
        causal LM, wrapped in one).
    :return: tokens generated (rows x steps while running) and the wall / CPU seconds spent in ``reset``/``step``.
    """
    import torch

    from aligngym.agents.policies import CausalLMPolicy

    if not isinstance(policy, CausalLMPolicy):
        policy = CausalLMPolicy(policy, tokenizer=int(policy.config.vocab_size), value_head=False)
    P = venv.unwrapped.runtime.max_prompt_tokens
    watch = Stopwatch()
    obs, _ = venv.reset(seed=seed)
    env_wall, env_cpu = watch.wall(), watch.cpu()
    n = venv.num_envs
    with torch.inference_mode():
        ids = torch.as_tensor(obs["input_ids"][:, :P], device=device)
        mask = torch.as_tensor(obs["attention_mask"][:, :P], device=device)
        state = policy.begin(ids, mask)
        suppress = torch.as_tensor(list(suppress_ids), dtype=torch.long, device=device)
        done = np.zeros(n, dtype=np.bool_)
        tokens, t = 0, 0
        while True:
            logits = state.logits
            if suppress.numel():
                logits.index_fill_(1, suppress, -float("inf"))
            action = torch.multinomial(torch.softmax(logits, dim=-1), 1)
            actions = action[:, 0].cpu().numpy()
            watch = Stopwatch()
            obs, _, terminated, truncated, _ = venv.step(actions)
            env_wall, env_cpu = env_wall + watch.wall(), env_cpu + watch.cpu()
            tokens += int((~done).sum())
            done |= terminated | truncated
            if done.all():
                return RolloutTimes(tokens, env_wall, env_cpu)
            state = policy.extend(state, torch.as_tensor(obs["input_ids"][:, P + t], device=device))
            t += 1


#: the old name of :func:`policy_env_rollout` (it took a ``transformers`` model; it still does)
kv_cached_env_rollout = policy_env_rollout


def generate_rollout(
    model: Any, input_ids: Any, attention_mask: Any, max_new_tokens: int, eos_id: int
) -> int:
    """``model.generate`` with the rollout's sampling: multinomial, top_k=0, top_p=1, EOS off (fixed length)."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    return int((out.shape[1] - input_ids.shape[1]) * out.shape[0])


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class EchoEnv:
    """The cheapest stand-in for an env in :func:`policy_env_rollout`: replays fixed prompts, writes each action
    into a shared array and ends after ``max_new_tokens`` steps (no copies, no decoding, no scoring).

    Timing the same loop against it separates the loop's own cost from aligngym's env cost.
    """

    def __init__(self, obs: dict[str, np.ndarray], max_prompt_tokens: int, max_new_tokens: int) -> None:
        self.num_envs = obs["input_ids"].shape[0]
        self.unwrapped = self
        self.runtime = type("Runtime", (), {"max_prompt_tokens": max_prompt_tokens})()
        self._prompt = obs
        self._T = max_new_tokens
        self._t = 0
        self._zeros = np.zeros(self.num_envs)
        self._false = np.zeros(self.num_envs, dtype=np.bool_)

    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._obs = {k: v.copy() for k, v in self._prompt.items()}
        self._t = 0
        return self._obs, {}

    def step(self, actions: np.ndarray) -> tuple[Any, ...]:
        col = self.runtime.max_prompt_tokens + self._t
        self._obs["input_ids"][:, col] = actions
        self._t += 1
        ended = np.full(self.num_envs, self._t >= self._T)
        return self._obs, self._zeros, ended, self._false, {}


def bench_rollout(
    env_id: str,
    batch: int,
    max_new_tokens: int,
    scorers: Sequence[str],
    *,
    reps: int,
    device: str,
    n_layer: int,
    n_embd: int,
    with_generate: bool = True,
) -> dict[str, Any]:
    """Tokens/s of the env-API rollout (one contender per scorer), and with ``with_generate`` also of the same loop on
    an :class:`EchoEnv` and of ``generate``, all alternating; the env's share of each env-API rollout.
    """
    import torch

    import aligngym.envs  # noqa: F401  (registers the ids)

    envs: dict[str, Any] = {
        s: gym.make_vec(
            env_id,
            num_envs=batch,
            vectorization_mode="vector_entry_point",
            autoreset_mode="batch",
            scorer=s,
            gold=False,  # the scorer alone: no gold judge at episode end
            max_new_tokens=max_new_tokens,
        )
        for s in scorers
    }
    first = next(iter(envs.values())).unwrapped
    rt = first.runtime
    if rt.action_ids is not None:
        raise ValueError(
            f"{env_id} has a restricted action vocabulary; the rollout benchmark needs token actions"
        )
    eos = rt.eos_id
    suppress = [eos] if eos is not None else []
    policy = rollout_policy(
        rt.vocab_size, max(64, rt.seq_len), n_layer=n_layer, n_embd=n_embd, eos_id=eos
    ).to(device)
    model = policy.model  # generate() runs the very same weights
    P = rt.max_prompt_tokens
    on_cpu = not device.startswith("cuda")
    env_parts: dict[str, list[Sample]] = {s: [] for s in envs}  # work = steps, times = env time
    policy_parts: dict[str, list[Sample]] = {s: [] for s in envs}  # work = steps, times = the rest

    def prompts(rep: int) -> dict[str, np.ndarray]:
        obs, _ = first.reset(seed=1001 + rep)  # every contender of a repetition gets the same prompts
        return obs

    def env_api(rep: int, name: str) -> Sample:
        venv = envs[name] if name in envs else EchoEnv(prompts(rep), P, max_new_tokens)
        torch.manual_seed(rep + 1)
        _sync(device)
        watch = Stopwatch()
        r = policy_env_rollout(policy, venv, seed=1001 + rep, suppress_ids=suppress, device=device)
        _sync(device)
        wall, cpu = watch.wall(), watch.cpu()
        if name in envs:
            steps = r.tokens / batch
            env_parts[name].append(Sample(steps, r.env_wall, r.env_cpu if on_cpu else None))
            policy_parts[name].append(Sample(steps, wall - r.env_wall, cpu - r.env_cpu if on_cpu else None))
        return Sample(r.tokens, wall, cpu if on_cpu else None)

    def generate(rep: int) -> Sample:
        obs = prompts(rep)
        ids = torch.as_tensor(obs["input_ids"][:, :P], device=device)
        mask = torch.as_tensor(obs["attention_mask"][:, :P], device=device)
        torch.manual_seed(rep + 1)
        _sync(device)
        watch = Stopwatch()
        with torch.inference_mode():
            tokens = generate_rollout(model, ids, mask, max_new_tokens, eos if eos is not None else 0)
        _sync(device)
        return Sample(tokens, watch.wall(), watch.cpu() if on_cpu else None)

    contenders: dict[str, Callable[[int], Sample]] = {
        f"env_api_{s}": partial(env_api, name=s) for s in scorers
    }
    if with_generate:
        contenders["kv_loop_no_env"] = partial(env_api, name="echo")
        contenders["generate"] = generate
    for fn in contenders.values():  # warm up (lazy scorers, first-call allocations)
        fn(-1)
    for parts in (env_parts, policy_parts):
        for v in parts.values():
            v.clear()
    samples = alternate(contenders, reps)
    for venv in envs.values():
        venv.close()
    summary = _summary(samples)

    def per_clock(fn: Callable[[str, str], float | None]) -> dict[str, dict[str, float | None]]:
        return {clock: {s: fn(s, clock) for s in scorers} for clock in CLOCKS}

    def ms_per_step(parts: dict[str, list[Sample]], s: str, clock: str) -> float | None:
        rate = _rate(parts[s], clock)
        return None if rate is None else 1e3 / rate

    def env_vs_policy(s: str, clock: str) -> float | None:
        pairs = [
            (e.wall, p.wall) if clock == "wall" else (e.cpu, p.cpu)
            for e, p in zip(env_parts[s], policy_parts[s])
        ]
        if any(e is None or p is None for e, p in pairs):
            return None
        return _median([e / p for e, p in pairs])

    out: dict[str, Any] = {
        "batch": batch,
        "max_new_tokens": max_new_tokens,
        "model": {
            "policy": f"{type(policy).__name__} over {type(model).__name__} (aligngym.agents.policies.tiny_causal_lm)",
            "n_layer": n_layer,
            "n_embd": n_embd,
            "vocab_size": rt.vocab_size,
        },
        "tokens_per_s": summary["rates"],
        "env_step_ms": per_clock(lambda s, c: ms_per_step(env_parts, s, c)),
        "policy_step_ms": per_clock(lambda s, c: ms_per_step(policy_parts, s, c)),
        "env_vs_policy_step": per_clock(env_vs_policy),
        "samples": summary["samples"],
    }
    if with_generate:
        out["ratios"] = {
            clock: {
                f"{k}_vs_generate": _ratio(v, rates["generate"]) for k, v in rates.items() if k != "generate"
            }
            for clock, rates in summary["rates"].items()
        }
    return out
