"""The named-agent table of the benchmark harness: ``"qlearning"``, ``"sb3-ppo"`` ... -> a trained-in-chunks agent.

Each entry is a factory that imports its agent module only when used, so the table lists agents that other modules
have not written (or whose extras are not installed) without failing; :func:`agent_status` says which import.
A suite may also name any class that follows ``aligngym.agents.base`` by import path (``"my_pkg.module:MyAgent"``).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: ``factory(env, *, seed, device, log_dir, total_timesteps, **overrides) -> agent``
AgentFactory = Callable[..., Any]

#: an agent label used in run ids and file names
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class AgentSpec:
    """One named agent of the table.

    :param name: the name used by ``--agents`` and suite files.
    :param factory: builds the agent (see :data:`AgentFactory`); imports lazily.
    :param module: the module the factory imports (checked by :func:`agent_status` without importing it).
    :param description: one line for ``aligngym list agents``.
    :param granularity: ``"token"``, ``"sequence"`` or ``"any"``: the env ids the agent is meant for.
    :param learns: ``False`` for agents whose ``learn`` does nothing (random, reference decoding): their learning
        curve is drawn against the step budget instead of the agent's own ``num_timesteps``.
    :param family: ``"aligngym"`` or ``"sb3"``.
    :param oracle: the agent reads the evaluation scorer or the test rows' context (labelled ``(oracle)`` in the
        report: its score is not a fair comparison with agents that only learn from the training reward).
    :param overrides: config overrides the entry applies before the suite's (e.g. a decoding mode).
    """

    name: str
    factory: AgentFactory
    module: str
    description: str
    granularity: str = "any"
    learns: bool = True
    family: str = "aligngym"
    oracle: bool = False
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


def _import_attr(path: str) -> Any:
    """``"pkg.module:Name"`` (or ``"pkg.module.Name"``) -> the object."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"expected an import path 'package.module:Name', got {path!r}")
    module = importlib.import_module(module_name)
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as err:
        raise ImportError(f"{module_name} has no attribute {attr!r}") from err
    return obj


def build_config(
    cls: Any, *, seed: int, device: str, log_dir: str | None, total_timesteps: int, **overrides: Any
):
    """``cls.Config(seed=..., device=..., log_dir=..., **overrides)`` with unknown fields reported by name.

    Chunked training (``learn`` called once per evaluation point) must follow the schedule of one long ``learn``
    call: an exploration schedule left to "a fraction of the first ``learn`` call" (``exploration_steps=None``,
    ``exploration_fraction``) is fixed here to ``exploration_fraction * total_timesteps``.
    """
    config_cls: Any = getattr(cls, "Config", None)
    if not isinstance(config_cls, type) or not dataclasses.is_dataclass(config_cls):
        raise TypeError(
            f"{cls!r} has no Config dataclass; aligngym agents are built as Cls(env, Cls.Config(...))"
        )
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(
            f"unknown config field(s) {unknown} for {config_cls.__name__}; its fields are {sorted(fields)}"
        )
    values: dict[str, Any] = {"seed": seed, "device": device, "log_dir": log_dir}
    values = {k: v for k, v in values.items() if k in fields}
    values.update(overrides)
    if (
        "exploration_steps" in fields
        and "exploration_fraction" in fields
        and values.get("exploration_steps") is None
        and total_timesteps > 0
    ):
        default_fraction = next(
            f.default for f in dataclasses.fields(config_cls) if f.name == "exploration_fraction"
        )
        fraction = float(values.get("exploration_fraction", default_fraction))
        values["exploration_steps"] = int(fraction * total_timesteps)
    return config_cls(**values)


def make_class_agent(
    path: str,
    env: Any,
    *,
    seed: int,
    device: str,
    log_dir: str | None,
    total_timesteps: int,
    **overrides: Any,
) -> Any:
    """Build ``Cls(env, Cls.Config(...))`` for the class at import path ``path`` (aligngym's agent contract)."""
    cls = _import_attr(path)
    config = build_config(
        cls, seed=seed, device=device, log_dir=log_dir, total_timesteps=total_timesteps, **overrides
    )
    return cls(env, config)


def _ours(path: str) -> AgentFactory:
    def factory(env: Any, **kwargs: Any) -> Any:
        return make_class_agent(path, env, **kwargs)

    factory.__qualname__ = factory.__name__ = f"make_{path.rpartition(':')[2]}"
    return factory


def _reference_agent_class() -> type:
    """The reference causal LM as an untrained agent: greedy (``deterministic``) or sampled decoding.

    Defined on first use so that importing the table stays light: an ``aligngym.agents.base.Agent`` whose
    ``Config`` adds ``model`` (``"default"``: the shipped reference LM, or a local directory) and ``temperature``.
    Token-level envs get one next token per call, sequence-level envs a whole completion (KV-cached
    ``CausalLMPolicy.sample``); the env's action masks are applied.
    """
    import numpy as np
    import torch

    from aligngym.agents.base import Agent, AgentConfig, add_batch_dim
    from aligngym.agents.lm import env_runtime
    from aligngym.agents.policies import CausalLMPolicy

    @dataclasses.dataclass
    class ReferenceConfig(AgentConfig):
        """:param model: ``"default"`` (the shipped reference LM) or a local causal-LM directory.
        :param temperature: sampling temperature when ``deterministic=False``."""

        model: str = "default"
        temperature: float = 1.0

    class ReferenceAgent(Agent):
        Config = ReferenceConfig
        algo_name = "reference"

        def __init__(self, env: Any, config: Any = None) -> None:
            super().__init__(env, config)
            self.runtime = env_runtime(env)
            self.policy = (
                CausalLMPolicy.for_env(env, self.config.model, value_head=False).to(self.device).eval()
            )
            self.generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
            self.sequence_level = "completion_len" in self.signature

        def learn(self, total_timesteps: int, callback: Any = None) -> Any:
            return self

        @torch.no_grad()
        def predict(
            self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
        ) -> tuple[Any, Any]:
            batch, single = add_batch_dim(obs)
            rt = self.runtime
            ids = torch.as_tensor(batch["input_ids"], device=self.device)
            mask = torch.as_tensor(batch["attention_mask"], device=self.device)
            if self.sequence_level:
                p = rt.max_prompt_tokens
                masks = torch.as_tensor(
                    np.stack([rt.action_mask(t) for t in range(rt.max_new_tokens)]), device=self.device
                )
                eos = None if rt.eos_id is None else self._action_of(rt.eos_id)
                out = self.policy.sample(
                    ids[:, :p],
                    mask[:, :p],
                    rt.max_new_tokens,
                    temperature=self.config.temperature,
                    greedy=deterministic,
                    eos_action=eos,
                    action_masks=masks,
                    generator=self.generator,
                )
                actions = out.actions.cpu().numpy()
            else:
                generated = batch["attention_mask"][:, rt.max_prompt_tokens :].sum(1)
                valid = torch.as_tensor(
                    np.stack([rt.action_mask(int(g)) for g in generated]), device=self.device
                )
                logits = self.policy(ids, mask).masked_fill(~valid, float("-inf"))
                if deterministic:
                    chosen = logits.argmax(-1)
                else:
                    probs = torch.softmax(logits / self.config.temperature, dim=-1)
                    chosen = torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
                actions = chosen.cpu().numpy()
            return (actions[0] if single else actions), state

        def _action_of(self, token_id: int) -> int | None:
            action_ids = self.runtime.action_ids
            if action_ids is None:
                return int(token_id)
            hits = np.flatnonzero(np.asarray(action_ids) == token_id)
            return int(hits[0]) if hits.size else None

    return ReferenceAgent


def _reference_factory(
    env: Any,
    *,
    seed: int,
    device: str,
    log_dir: str | None,
    total_timesteps: int,
    **overrides: Any,
) -> Any:
    """The reference LM decoding with no training (see :func:`_reference_agent_class`)."""
    cls = _reference_agent_class()
    config = build_config(
        cls, seed=seed, device=device, log_dir=log_dir, total_timesteps=total_timesteps, **overrides
    )
    return cls(env, config)


#: the SB3 entries of the table (the names ``aligngym.agents.sb3.make_sb3_agent`` takes)
SB3_AGENTS = ("sb3-ppo", "sb3-a2c", "sb3-dqn", "sb3-maskable-ppo")


def schedule_over_budget(model: Any, total_timesteps: int) -> None:
    """Make an SB3 model's schedules follow ``total_timesteps`` across several ``learn`` calls.

    SB3 computes ``progress_remaining`` (learning-rate and clip-range schedules, DQN's epsilon) within one ``learn``
    call; with ``reset_num_timesteps=False`` every chunk would restart it. After this, progress is measured against
    the whole budget (clamped at its end), as in one long call. The patch is an instance attribute of ``model``.
    """
    update = model._update_current_progress_remaining

    def progress_over_budget(num_timesteps: int, total: int) -> None:
        del total  # the end of this learn call; the budget is the end of the run
        update(num_timesteps, max(int(total_timesteps), num_timesteps))

    model._update_current_progress_remaining = progress_over_budget


def _sb3(name: str) -> AgentFactory:
    def factory(
        env: Any,
        *,
        seed: int,
        device: str,
        log_dir: str | None,
        total_timesteps: int,
        **overrides: Any,
    ) -> Any:
        from aligngym.agents.sb3 import make_sb3_agent

        agent = make_sb3_agent(name, env, seed=seed, device=device, log_dir=log_dir, **overrides)
        if total_timesteps > 0:
            schedule_over_budget(agent.model, total_timesteps)
        return agent

    factory.__qualname__ = factory.__name__ = f"make_{name.replace('-', '_')}"
    return factory


AGENTS: dict[str, AgentSpec] = {}


def register_agent(spec: AgentSpec, *, overwrite: bool = False) -> AgentSpec:
    """Add a named agent to the table (``overwrite=True`` replaces one)."""
    if not LABEL_RE.match(spec.name):
        raise ValueError(f"agent name {spec.name!r} must match {LABEL_RE.pattern}")
    if spec.name in AGENTS and not overwrite:
        raise ValueError(f"agent {spec.name!r} is already registered; pass overwrite=True to replace it")
    AGENTS[spec.name] = spec
    return spec


for _spec in (
    AgentSpec(
        "random",
        _ours("aligngym.agents.base:RandomAgent"),
        "aligngym.agents.base",
        "uniform random valid actions (the baseline)",
        learns=False,
    ),
    AgentSpec(
        "qlearning",
        _ours("aligngym.agents.tabular:QLearningAgent"),
        "aligngym.agents.tabular",
        "tabular Q-learning keyed by the visible token ids (small action vocabularies)",
        granularity="token",
    ),
    AgentSpec(
        "reinforce",
        _ours("aligngym.agents.reinforce:ReinforceAgent"),
        "aligngym.agents.reinforce",
        "REINFORCE with a GRU (or causal-LM) token policy and a baseline",
        granularity="token",
    ),
    AgentSpec(
        "ppo",
        _ours("aligngym.agents.ppo:PPOAgent"),
        "aligngym.agents.ppo",
        "PPO: causal-LM actor with value head, GAE, clipped objective, adaptive KL to the reference",
        granularity="token",
    ),
    AgentSpec(
        "grpo",
        _ours("aligngym.agents.grpo:GRPOAgent"),
        "aligngym.agents.grpo",
        "GRPO: group-normalized advantages, no value model (sequence-level envs)",
        granularity="sequence",
    ),
    AgentSpec(
        "guided-decoding",
        _ours("aligngym.agents.decoding:RewardGuidedDecoder"),
        "aligngym.agents.decoding",
        "reward-guided decoding: reference logits + w * scorer bonus; an oracle (reads the evaluation scorer and the "
        "test rows' context) unless guide_scorer= names a proxy scorer or reward model",
        learns=False,
        oracle=True,
    ),
    AgentSpec(
        "guided-decoding-oracle",
        _ours("aligngym.agents.decoding:RewardGuidedDecoder"),
        "aligngym.agents.decoding",
        "reward-guided decoding in its oracle mode: the evaluation scorer and the test rows' context (labelled so)",
        learns=False,
        oracle=True,
    ),
    AgentSpec(
        "reference",
        _reference_factory,
        "aligngym.agents.policies",
        "the shipped reference LM decoding, untrained (CausalLMPolicy; greedy or sampled)",
        learns=False,
    ),
    *(
        AgentSpec(
            name,
            _sb3(name),
            "aligngym.agents.sb3",
            f"stable-baselines3 {name[4:].upper()} with the token-embedding extractor (aligngym.agents.sb3)",
            family="sb3",
        )
        for name in SB3_AGENTS
    ),
):
    register_agent(_spec)

# The supervised and RL4LMs-style rows of the alignment suite (``benchmarks/suites/alignment.toml``).
for _spec in (
    AgentSpec(
        "sft",
        _ours("aligngym.agents.sft:SFTAgent"),
        "aligngym.agents.sft",
        "supervised fine-tuning of the reference LM on the task's good train examples (references, chosen answers)",
        learns=False,
    ),
    AgentSpec(
        "sft+ppo",
        _ours("aligngym.agents.ppo:PPOAgent"),
        "aligngym.agents.ppo",
        "PPO warm-started by SFT on the task's demonstrations; the SFT model is the KL reference (RL4LMs)",
        granularity="token",
        overrides={"sft_steps": 200},
    ),
    AgentSpec(
        "rloo",
        _ours("aligngym.agents.grpo:GRPOAgent"),
        "aligngym.agents.grpo",
        "RLOO: REINFORCE with a leave-one-out baseline over each prompt's completions (GRPOAgent, advantage='rloo')",
        granularity="sequence",
        overrides={"advantage": "rloo"},
    ),
    AgentSpec(
        "sft+grpo",
        _ours("aligngym.agents.grpo:GRPOAgent"),
        "aligngym.agents.grpo",
        "GRPO warm-started by SFT on the task's demonstrations; the SFT model is the KL reference",
        granularity="sequence",
        overrides={"sft_steps": 200},
    ),
):
    register_agent(_spec)


# The multi-turn rows (aligngym/Dialogue-Token-v0, aligngym/Guess-Token-v0): causal-LM agents over whole conversations.
for _spec in (
    AgentSpec(
        "multiturn-ppo",
        _ours("aligngym.agents.multiturn_ppo:MultiTurnPPOAgent"),
        "aligngym.agents.multiturn_ppo",
        "multi-turn PPO: GAE over the assistant's tokens across turns, value head, KL to the reference "
        "(dialogue ids)",
        granularity="any",
    ),
    AgentSpec(
        "multiturn-grpo",
        _ours("aligngym.agents.multiturn_grpo:MultiTurnGRPOAgent"),
        "aligngym.agents.multiturn_grpo",
        "multi-turn GRPO: G conversations per opening, group-relative advantages (dialogue ids)",
        granularity="any",
    ),
):
    register_agent(_spec)


def get_agent_spec(name: str) -> AgentSpec:
    """The table entry for ``name``; an import path ``"pkg.module:Class"`` gives an ad-hoc entry for that class.

    :raises ValueError: for an unknown name (the message lists the table).
    """
    if name in AGENTS:
        return AGENTS[name]
    if ":" in name:
        module = name.partition(":")[0]
        return AgentSpec(name, _ours(name), module, f"agent class {name}")
    raise ValueError(f"unknown agent {name!r}; named agents: {', '.join(AGENTS)} (or 'package.module:Class')")


def make_agent(
    name: str,
    env: Any,
    *,
    seed: int = 0,
    device: str = "auto",
    log_dir: str | None = None,
    total_timesteps: int = 0,
    **overrides: Any,
) -> Any:
    """Build the named agent on ``env``.

    :param name: a table name (``list(AGENTS)``) or an import path ``"pkg.module:Class"``.
    :param seed: the agent's seed.
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``.
    :param log_dir: TensorBoard directory of the agent (``None``: none).
    :param total_timesteps: the whole training budget (fixes schedules that would follow the first chunk only).
    :param overrides: config fields of the agent (``Config`` fields, or ``make_sb3_agent`` keyword arguments).
    """
    spec = get_agent_spec(name)
    return spec.factory(
        env,
        seed=seed,
        device=device,
        log_dir=log_dir,
        total_timesteps=total_timesteps,
        **{**spec.overrides, **overrides},
    )


def is_oracle(spec: AgentSpec, agent: Any = None) -> bool:
    """Whether a run of ``spec`` is an oracle: the agent's own ``is_oracle`` (or ``oracle``) attribute when it has
    one (``RewardGuidedDecoder`` sets it from its mode: no ``guide_scorer`` = oracle), else the table's
    ``spec.oracle``."""
    for name in ("is_oracle", "oracle"):
        value = getattr(agent, name, None) if agent is not None else None
        if isinstance(value, bool):
            return value
    return spec.oracle


def agent_status(name: str) -> str:
    """``"ok"`` when the agent's module can be found, else why not (without importing it)."""
    spec = get_agent_spec(name)
    try:
        found = importlib.util.find_spec(spec.module) is not None
    except (ImportError, ValueError) as err:
        return f"unavailable: {err}"
    return "ok" if found else f"unavailable: module {spec.module} not found"


def list_agents() -> dict[str, str]:
    """Every named agent with its description, availability and ``[oracle]`` where its default mode is one."""
    return {
        name: f"[{spec.family}]{' [oracle]' if spec.oracle else ''} {spec.description} ({agent_status(name)})"
        for name, spec in AGENTS.items()
    }
