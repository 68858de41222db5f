"""Benchmark suites: parse suite files (TOML / YAML), expand them into :class:`RunSpec` s, resolve env ids.

A suite is a matrix of envs x agents x seeds with budgets and overrides; :func:`expand_suite` turns it (or
command-line lists) into one :class:`RunSpec` per run, which :mod:`aligngym.benchmarks.run` executes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from aligngym.benchmarks.agents import LABEL_RE, get_agent_spec
from aligngym.benchmarks.metrics import HackingRule


@dataclass(frozen=True)
class RunSpec:
    """One run: an agent trained on one env with one seed, evaluated ``eval_points`` times (plus at step 0).

    :param env_id: a registered id (``"aligngym/Target-Token-v0"``).
    :param agent: the label of the agent in results (``"qlearning"``, ``"random-k24"``).
    :param agent_name: the named agent (or ``"pkg.module:Class"``) the label builds; defaults to ``agent``.
    :param seed: agent seed.
    :param steps: training budget in env steps (tokens for token-level envs).
    :param eval_points: evaluations after training chunks of ``steps / eval_points`` (one more at step 0).
    :param eval_episodes: test episodes per evaluation; ``None``: every prompt of the test split once.
    :param eval_deterministic: greedy (``True``) or sampled actions during evaluation.
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``.
    :param env_kwargs: ``gym.make`` keyword arguments (both splits).
    :param agent_kwargs: agent config overrides.
    :param samples: completions kept per evaluation.
    :param curriculum: train on ``Curriculum(gym.make(env_id, **env_kwargs), ...)`` built from this dict (keys of
        :data:`aligngym.envs.curriculum.CONFIG_KEYS`, ``schedule = "linear"`` spreads ``steps`` over the levels),
        plus ``eval_difficulty``: the level of the held-out evaluation (default: ``env_kwargs["max_difficulty"]``);
        ``None``: the env as made.
    :param train_prompts: train on a practice prompt set instead of the task's train split, a table
        ``{source, n, seed}`` naming one of :data:`aligngym.agents.practice_prompts.PRACTICE_SOURCES` (passed as
        ``prompts=`` to the training env only; evaluation stays on the task's test split); ``None``: the train split.
    """

    env_id: str
    agent: str
    seed: int = 0
    steps: int = 10_000
    eval_points: int = 5
    agent_name: str | None = None
    eval_episodes: int | None = None
    eval_deterministic: bool = True
    device: str = "auto"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    samples: int = 4
    curriculum: dict[str, Any] | None = None
    train_prompts: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.eval_points < 1:
            raise ValueError(f"eval_points must be >= 1, got {self.eval_points}")
        if self.eval_episodes is not None and self.eval_episodes < 1:
            raise ValueError(
                f"eval_episodes must be positive or None (every test prompt), got {self.eval_episodes}"
            )
        if not LABEL_RE.match(self.agent):
            raise ValueError(f"agent label {self.agent!r} must match {LABEL_RE.pattern} (it names files)")
        if self.curriculum is not None:
            check_run_curriculum(self.curriculum)
        if self.train_prompts is not None:
            from aligngym.agents.practice_prompts import check_practice_config

            check_practice_config(self.train_prompts)

    @property
    def factory_name(self) -> str:
        return self.agent_name or self.agent

    @property
    def run_id(self) -> str:
        return f"{env_slug(self.env_id)}__{self.agent}__s{self.seed}"

    def fingerprint(self) -> str:
        """Hash of everything that determines the result (``--resume`` re-runs a run whose fingerprint changed)."""
        fields = dataclasses.asdict(self)
        # runs without a curriculum or practice prompts keep the fingerprints of older harnesses
        for key in ("curriculum", "train_prompts"):
            if fields[key] is None:
                del fields[key]
        blob = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_run_curriculum(config: Any) -> None:
    """Refuse a run's curriculum table with unknown keys (those of :func:`~aligngym.envs.curriculum.curriculum_from_config`
    plus ``eval_difficulty``) or a bad schedule."""
    from aligngym.envs.curriculum import check_curriculum_config

    if not isinstance(config, dict):
        raise TypeError(f"curriculum must be a table (dict), got {type(config).__name__}: {config!r}")
    level = config.get("eval_difficulty")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or level < 1):
        raise ValueError(f"curriculum eval_difficulty must be a positive integer, got {level!r}")
    check_curriculum_config({k: v for k, v in config.items() if k != "eval_difficulty"})


def _merge_curriculum(env_table: Any, agent_table: Any) -> dict[str, Any] | None:
    """The run's curriculum: the agent table's keys over the env table's; ``curriculum = false`` in the agent table
    turns the env's off."""
    if agent_table is False or (env_table in (None, False) and agent_table is None):
        return None
    return {**dict(env_table or {}), **dict(agent_table or {})}


def env_slug(env_id: str) -> str:
    """``"aligngym/Target-Token-v0"`` -> ``"Target-Token-v0"``; other namespaces keep theirs (``ns_Name-v0``)."""
    name = env_id.split(":")[-1]
    if name.startswith("aligngym/"):
        name = name[len("aligngym/") :]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def resolve_env_id(name: str) -> str:
    """Full registered id of ``name``: ``"Target-Token"`` / ``"Target-Token-v0"`` -> ``"aligngym/Target-Token-v0"``.

    :raises ValueError: when the id is not registered (the message lists aligngym's ids).
    """
    import aligngym.envs

    if ":" in name:  # "module:id" imports its module on gym.make
        return name
    candidates = [name]
    if "/" not in name:
        candidates.append(f"aligngym/{name}")
    candidates += [f"{c}-v0" for c in candidates if not re.search(r"-v\d+$", c)]
    for c in candidates:
        if c in gym.registry:
            return c
    known = ", ".join(aligngym.envs.list_envs())
    raise ValueError(f"unknown env {name!r}; registered aligngym envs: {known}")


SUITE_DEFAULTS: dict[str, Any] = {
    "seeds": 3,
    "steps": 10_000,
    "eval_points": 5,
    "eval_episodes": None,
    "eval_deterministic": True,
    "device": "auto",
    "samples": 4,
}
_GROUP_KEYS = {
    "envs",
    "agents",
    "seeds",
    "steps",
    "eval_points",
    "eval_episodes",
    "eval_deterministic",
    "samples",
}
_AGENT_RESERVED = {"agent", "env_kwargs", "eval_deterministic", "curriculum", "train_prompts"}


def _table_copy(value: Any) -> Any:
    """A suite table as the run's own dict (``None`` for an empty or missing one); anything else is passed on as it
    is, for :class:`RunSpec` to refuse with a message that names it."""
    if isinstance(value, dict):
        return dict(value) or None
    return value or None


def suite_dir() -> Path:
    """Directory of the shipped suite files (``aligngym/benchmarks/suites``)."""
    return Path(str(importlib.resources.files("aligngym.benchmarks").joinpath("suites")))


def list_suites() -> dict[str, str]:
    """Shipped suite names with their descriptions."""
    out = {}
    for path in sorted(suite_dir().glob("*.toml")):
        try:
            out[path.stem] = str(load_suite(path).get("suite", {}).get("description", ""))
        except Exception as err:  # a broken shipped suite should not hide the others
            out[path.stem] = f"(unreadable: {err})"
    return out


def find_suite(name_or_path: str | Path) -> Path:
    """A suite file path, or a shipped suite by name (``"default"`` -> ``suites/default.toml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for ext in ("", ".toml", ".yaml", ".yml"):
        shipped = suite_dir() / f"{name_or_path}{ext}"
        if shipped.is_file():
            return shipped
    raise FileNotFoundError(
        f"suite {str(name_or_path)!r} is neither a file nor a shipped suite ({', '.join(list_suites()) or 'none'})"
    )


def load_suite(name_or_path: str | Path) -> dict[str, Any]:
    """Parse a suite file (TOML via tomllib / tomli, YAML via PyYAML) into a dict; see :func:`expand_suite`."""
    path = find_suite(name_or_path)
    text = path.read_bytes()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        data = tomllib.loads(text.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a suite must be a mapping at the top level, got {type(data).__name__}")
    unknown = set(data) - {"suite", "report", "envs", "agents", "runs"}
    if unknown:
        raise ValueError(
            f"{path}: unknown top-level section(s) {sorted(unknown)}; expected suite, report, envs, agents, runs"
        )
    data.setdefault("suite", {}).setdefault("name", path.stem)
    data["suite"]["path"] = str(path)
    return data


def parse_seeds(value: Any) -> list[int]:
    """Seeds from an int n (``0 .. n-1``), a list, or a string (``"3"`` -> 0,1,2; ``"0,4,7"`` or ``"5,"`` -> list)."""
    if isinstance(value, bool):
        raise TypeError(f"seeds must be an int, a list of ints or a string, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"the number of seeds must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, str):
        text = value.strip()
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        return parse_seeds(int(text))
    if isinstance(value, list | tuple):
        seeds = [int(s) for s in value]
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a non-empty list without repeats, got {value!r}")
        return seeds
    raise TypeError(f"seeds must be an int, a list of ints or a string, got {type(value).__name__}")


def expand_suite(
    suite: dict[str, Any] | None = None,
    *,
    envs: Sequence[str] | None = None,
    agents: Sequence[str] | None = None,
    **overrides: Any,
) -> list[RunSpec]:
    """Turn a suite dict (and/or command-line lists) into run specs.

    Suite layout (every section optional)::

        [suite]   seeds, steps, eval_points, eval_episodes (0: every test prompt), eval_deterministic, device,
                  samples; envs / agents: the matrix when there is no [[runs]]
        [report]  hacking_min_score_rise, hacking_diversity_ratio, hacking_diversity_floor, hacking_min_gold_fall,
                  hacking_length_ratio, hacking_length_floor
        [envs."aligngym/X-Token-v0"]   gym.make kwargs for every agent on that env, and optionally
                        curriculum = {target_success, window, schedule, ..., eval_difficulty}: train on a
                        Curriculum-wrapped env (see :class:`RunSpec`)
        [agents.NAME]   config overrides; reserved: agent (the named agent when NAME is a label),
                        env_kwargs (merged over the env's), eval_deterministic, curriculum (merged over the
                        env's key by key; false turns it off), train_prompts ({source, n, seed}: a practice
                        prompt set for the training env only, see :class:`RunSpec`)
        [[runs]]  envs, agents, and any of seeds / steps / eval_points / eval_episodes / samples for this group

    :param envs: with ``agents``, replaces the suite's matrix by envs x agents (names as in :func:`resolve_env_id`).
    :param overrides: ``seeds``, ``steps``, ``eval_points``, ``eval_episodes``, ``device``, ``samples`` that win over
        every group (``None`` values are ignored).
    :raises ValueError: unknown keys, envs or agents, or two runs with the same run id.
    """
    suite = suite or {}
    top = {
        **SUITE_DEFAULTS,
        **{k: v for k, v in suite.get("suite", {}).items() if k not in ("name", "path", "description")},
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    bad = set(overrides) - set(SUITE_DEFAULTS)
    if bad:
        raise ValueError(f"unknown override(s) {sorted(bad)}; expected {sorted(SUITE_DEFAULTS)}")
    env_tables = {resolve_env_id(k): dict(v or {}) for k, v in suite.get("envs", {}).items()}
    env_curricula = {k: v.pop("curriculum", None) for k, v in env_tables.items()}
    agent_tables: dict[str, dict[str, Any]] = {k: dict(v or {}) for k, v in suite.get("agents", {}).items()}
    if envs or agents:
        if not (envs and agents):
            raise ValueError("give both envs and agents (or a suite with [[runs]] / [suite] envs and agents)")
        groups = [{"envs": list(envs), "agents": list(agents)}]
    elif suite.get("runs"):
        groups = list(suite["runs"])
    elif top.get("envs") and top.get("agents"):
        groups = [{"envs": top["envs"], "agents": top["agents"]}]
    else:
        raise ValueError("nothing to run: give envs and agents, or a suite with [[runs]] groups")
    unknown_top = set(top) - set(SUITE_DEFAULTS) - {"envs", "agents"}
    if unknown_top:
        raise ValueError(
            f"unknown [suite] key(s) {sorted(unknown_top)}; expected {sorted(SUITE_DEFAULTS)}, envs, agents"
        )
    specs: list[RunSpec] = []
    seen: dict[str, int] = {}
    for g, group in enumerate(groups):
        unknown = set(group) - _GROUP_KEYS
        if unknown:
            raise ValueError(
                f"runs group {g}: unknown key(s) {sorted(unknown)}; expected {sorted(_GROUP_KEYS)}"
            )
        settings = {**top, **{k: v for k, v in group.items() if k not in ("envs", "agents")}, **overrides}
        seeds = parse_seeds(settings["seeds"])
        eval_episodes = settings["eval_episodes"] or None
        for env_name in group.get("envs", []):
            env_id = resolve_env_id(env_name)
            for label in group.get("agents", []):
                table = agent_tables.get(label, {})
                agent_name = table.get("agent", label)
                get_agent_spec(agent_name)  # unknown names fail here, before anything runs
                env_kwargs = {**env_tables.get(env_id, {}), **dict(table.get("env_kwargs") or {})}
                agent_kwargs = {k: v for k, v in table.items() if k not in _AGENT_RESERVED}
                deterministic = bool(table.get("eval_deterministic", settings["eval_deterministic"]))
                curriculum = _merge_curriculum(env_curricula.get(env_id), table.get("curriculum"))
                for seed in seeds:
                    spec = RunSpec(
                        env_id=env_id,
                        agent=label,
                        agent_name=agent_name if agent_name != label else None,
                        seed=int(seed),
                        steps=int(settings["steps"]),
                        eval_points=int(settings["eval_points"]),
                        eval_episodes=None if eval_episodes is None else int(eval_episodes),
                        eval_deterministic=deterministic,
                        device=str(settings["device"]),
                        env_kwargs=env_kwargs,
                        agent_kwargs=agent_kwargs,
                        samples=int(settings["samples"]),
                        curriculum=curriculum,
                        train_prompts=_table_copy(table.get("train_prompts")),
                    )
                    if spec.run_id in seen:
                        raise ValueError(
                            f"run {spec.run_id} appears twice (groups {seen[spec.run_id]} and {g}); give one of them "
                            "a label: [agents.LABEL] with agent = NAME"
                        )
                    seen[spec.run_id] = g
                    specs.append(spec)
    return specs


def hacking_rule_of(suite: dict[str, Any] | None) -> HackingRule:
    """The :class:`HackingRule` of a suite's ``[report]`` (``hacking_min_score_rise``, ``hacking_diversity_ratio``,
    ``hacking_diversity_floor``, ``hacking_min_gold_fall``, ``hacking_length_ratio``, ``hacking_length_floor``);
    defaults for the rest."""
    report = (suite or {}).get("report", {})
    keys = {f"hacking_{f.name}": f.name for f in dataclasses.fields(HackingRule)}
    unknown = set(report) - set(keys)
    if unknown:
        raise ValueError(f"unknown [report] key(s) {sorted(unknown)}; expected {sorted(keys)}")
    return HackingRule(**{keys[k]: float(v) for k, v in report.items()})
