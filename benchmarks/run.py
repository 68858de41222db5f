"""One benchmark run: train an agent in chunks, evaluate it on the test split after each, record it as JSON.

:func:`execute_run` is what every backend calls (in this process, in a spawned worker or as a Ray task); the record
is written atomically (:func:`write_json_atomic`) so that a killed run never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from aligngym.benchmarks.agents import get_agent_spec, is_oracle, make_agent
from aligngym.benchmarks.metrics import distinct_n, lm_metrics, repetition_rate
from aligngym.benchmarks.suite import RunSpec

#: 2: ``kl`` is measured on the evaluation completions (1: it was the agent's last training-batch ``charts/kl``)
SCHEMA_VERSION = 2
RUNS_DIR = "runs"


class EpisodeInfoRecorder(gym.Wrapper):
    """Keeps the final ``info`` of every episode and the prompt slot of its first observation (for KL/perplexity).

    ``final_infos[i]`` and ``prompts[i]`` belong to the same episode; a prompt slot is the pair
    ``(input_ids[:P], attention_mask[:P])`` of the observation ``reset`` returned, P = the env's ``max_prompt_tokens``
    (``None`` for envs without that layout).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.final_infos: list[dict[str, Any]] = []
        self.prompts: list[tuple[np.ndarray, np.ndarray] | None] = []
        self._prompt: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        p = getattr(getattr(self.env.unwrapped, "runtime", None), "max_prompt_tokens", None)
        self._prompt = None
        if p is not None and isinstance(obs, dict) and "input_ids" in obs and "attention_mask" in obs:
            self._prompt = (np.array(obs["input_ids"][:p]), np.array(obs["attention_mask"][:p]))
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            self.final_infos.append(info)
            self.prompts.append(self._prompt)
        return obs, reward, terminated, truncated, info


def make_train_env(spec: RunSpec) -> gym.Env:
    """The training env of a run: ``gym.make(env_id, split="train", gold=False, **env_kwargs)``, wrapped in a
    :class:`~aligngym.envs.curriculum.Curriculum` when ``spec.curriculum`` is set.

    Gold is an evaluation judge: the training env skips it (it costs a model call per episode) unless asked.
    With ``spec.train_prompts`` the env draws from that practice prompt set instead of the train split.
    """
    kwargs: dict[str, Any] = {"split": "train", "gold": False, **spec.env_kwargs}
    if spec.train_prompts is not None:
        from aligngym.agents.practice_prompts import practice_rows
        from aligngym.envs.tasks import get_task

        task = gym.spec(spec.env_id).kwargs.get("task")
        if task is None:
            raise ValueError(f"train_prompts needs an aligngym task env; {spec.env_id} registers no task")
        kwargs["prompts"] = practice_rows(spec.train_prompts, get_task(task).name)
    env = gym.make(spec.env_id, **kwargs)
    if spec.curriculum is None:
        return env
    from aligngym.envs.curriculum import curriculum_from_config

    config = {k: v for k, v in spec.curriculum.items() if k != "eval_difficulty"}
    return curriculum_from_config(env, config, total_steps=spec.steps)


def eval_difficulty(spec: RunSpec) -> int | None:
    """The level a curriculum run is evaluated at: ``curriculum["eval_difficulty"]``, else
    ``env_kwargs["max_difficulty"]``; ``None`` (the env's own ``difficulty``) for a run without a curriculum."""
    if spec.curriculum is None:
        return None
    level = spec.curriculum.get("eval_difficulty", spec.env_kwargs.get("max_difficulty"))
    return None if level is None else int(level)


def make_test_env(spec: RunSpec) -> gym.Env:
    """The evaluation env of a run: ``split="test"`` (held-out instances where the env has them), at
    :func:`eval_difficulty` for a curriculum run (``max_difficulty`` is kept, so the spaces match training)."""
    kwargs = {**spec.env_kwargs, "split": "test"}
    level = eval_difficulty(spec)
    if level is not None:
        kwargs["difficulty"] = level
    return gym.make(spec.env_id, **kwargs)


def find_curriculum(env: Any) -> Any:
    """The :class:`~aligngym.envs.curriculum.Curriculum` in ``env``'s wrapper chain, or ``None``."""
    from aligngym.envs.curriculum import find_curriculum as find

    return find(env)


def _int_attr(env: gym.Env, name: str) -> int | None:
    value = getattr(env.unwrapped, name, None)
    return int(value) if isinstance(value, int | np.integer) and not isinstance(value, bool) else None


def level_fields(train_env: gym.Env, test_env: gym.Env) -> dict[str, Any]:
    """What a curve point says about difficulty: ``difficulty`` (the training env's current level),
    ``eval_difficulty`` (the evaluation's level) and, under a curriculum, ``mastered`` / ``highest_level``; empty for
    envs without levels."""
    out: dict[str, Any] = {}
    curriculum = find_curriculum(train_env)
    if curriculum is not None:
        state = curriculum.controller.state()
        out.update(
            difficulty=state["level"],
            mastered=state["mastered"],
            highest_level=state["highest_level"],
            curriculum_episodes=state["episodes"],
        )
    elif (level := _int_attr(train_env, "difficulty")) is not None:
        out["difficulty"] = level
    if (level := _int_attr(test_env, "difficulty")) is not None:
        out["eval_difficulty"] = level
    return out


def _check_curriculum_moved(spec: RunSpec, train_env: gym.Env, agent: Any) -> None:
    """Fail a curriculum run whose agent trained without stepping the wrapped env (an agent that builds its own
    vector env from the id would silently train at a fixed level)."""
    curriculum = find_curriculum(train_env)
    if curriculum is None or int(getattr(agent, "num_timesteps", 0)) == 0:
        return
    if curriculum.controller.env_steps == 0:
        raise RuntimeError(
            f"agent {spec.factory_name!r} trained {agent.num_timesteps} steps without stepping the curriculum-wrapped "
            "env it was given (it builds its own env), so the curriculum cannot move it; run it without curriculum"
        )


def _completion_tokens(info: dict[str, Any], eos_id: int | None) -> list[Any]:
    """Completion token ids without EOS (the text the scorer judged), else its whitespace words."""
    ids = info.get("completion_ids")
    if ids is not None:
        return [int(t) for t in ids if eos_id is None or int(t) != eos_id]
    return str(info.get("completion", "")).split()


def _gold(infos: list[dict[str, Any]]) -> tuple[float | None, dict[str, float], str | None]:
    """Mean ``info["gold_score"]`` and gold components over episodes; a note when only some episodes carry one."""
    golds = [info.get("gold_score") for info in infos]
    present = [g for g in golds if g is not None]
    if not present:
        return None, {}, None
    if len(present) != len(golds):
        return None, {}, f"only {len(present)} of {len(golds)} episodes reported gold_score"
    comps: dict[str, list[float]] = {}
    for info in infos:
        for name, value in (info.get("gold_components") or {}).items():
            comps.setdefault(name, []).append(float(value))
    return float(np.mean(present)), {k: float(np.mean(v)) for k, v in comps.items()}, None


def evaluate_point(
    agent: Any,
    env: EpisodeInfoRecorder,
    *,
    n_episodes: int | None,
    deterministic: bool,
    samples: int,
) -> dict[str, Any]:
    """One evaluation of ``agent`` on the (test) ``env``: returns, score, gold, KL, perplexity, diversity, samples.

    :param env: the test env wrapped in :class:`EpisodeInfoRecorder`.
    :param n_episodes: ``None``: every prompt of the split once; else that many episodes (prompts drawn, seed 0).
    :param deterministic: greedy (``True``) or sampled actions.
    :param samples: completions kept (the first episodes').
    :returns: ``mean_return``, ``std_return``, ``mean_score``, ``std_score``, ``gold_score`` (mean of the final
        ``info["gold_score"]``, ``None`` when the env reports none), ``gold_components``, ``kl`` and ``ref_ppl``
        (:func:`~aligngym.benchmarks.metrics.lm_metrics`; ``None`` with ``kl_note`` / ``ref_ppl_note`` saying why),
        ``length`` (= ``mean_length``: tokens incl. EOS), ``distinct_1``, ``distinct_2``, ``repetition``,
        ``reward_components`` (name -> mean), ``eval_time`` (s) and ``samples`` (``{"prompt", "completion",
        "score"}``, plus ``gold_score`` when reported).
    """
    from aligngym.agents.base import evaluate

    env.final_infos, env.prompts = [], []
    result = evaluate(agent, env, n_episodes=n_episodes, deterministic=deterministic, seed=0)
    infos = env.final_infos
    runtime = getattr(env.unwrapped, "runtime", None)
    eos_id = getattr(runtime, "eos_id", None)
    tokens = [_completion_tokens(info, eos_id) for info in infos]
    components: dict[str, list[float]] = {}
    for info in infos:
        for name, value in (info.get("reward_components") or {}).items():
            components.setdefault(name, []).append(float(value))
    gold, gold_components, gold_note = _gold(infos)
    t0 = time.perf_counter()
    if infos and all(p is not None for p in env.prompts) and all("completion_ids" in i for i in infos):
        lm = lm_metrics(
            agent,
            runtime,
            np.stack([p[0] for p in env.prompts if p is not None]),
            np.stack([p[1] for p in env.prompts if p is not None]),
            [list(i["completion_ids"]) for i in infos],
        )
    else:
        why = "the env records no prompt slot or completion ids"
        lm = {"kl": None, "kl_note": why, "ref_ppl": None, "ref_ppl_note": why}
    scores = result["scores"]
    kept = [
        {"prompt": p, "completion": c, "score": float(s)}
        for (p, c), s in zip(result["completions"][:samples], scores[:samples])
    ]
    for sample, info in zip(kept, infos):
        if info.get("gold_score") is not None:
            sample["gold_score"] = float(info["gold_score"])
    return {
        "mean_return": result["mean_return"],
        "std_return": result["std_return"],
        "mean_score": result["mean_score"],
        "std_score": result["std_score"],
        "gold_score": gold,
        "gold_components": gold_components,
        "gold_note": gold_note,
        **lm,
        "mean_length": result["mean_length"],
        "length": result["mean_length"],
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "repetition": repetition_rate(tokens),
        "reward_components": {k: float(np.mean(v)) for k, v in components.items()},
        "eval_time": result["wall_time"],
        "metrics_time": time.perf_counter() - t0,
        "samples": kept,
    }


def _jsonable(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, tuples -> lists (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, str | int | bool) or obj is None:
        return obj
    return str(obj)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same directory, fsync it, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(_jsonable(data), fh, indent=1, allow_nan=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def run_json_path(out_dir: str | Path, run_id: str) -> Path:
    return Path(out_dir) / RUNS_DIR / f"{run_id}.json"


def _machine() -> dict[str, Any]:
    versions: dict[str, str] = {"python": platform.python_version()}
    for mod in ("numpy", "gymnasium", "torch", "stable_baselines3"):
        m = sys.modules.get(mod)
        if m is not None:
            versions[mod] = str(getattr(m, "__version__", "?"))
    try:
        from importlib.metadata import version

        versions["aligngym"] = version("aligngym")
    except Exception:
        pass
    gpu = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "versions": versions,
    }


def execute_run(
    spec: RunSpec,
    out_dir: str | Path,
    *,
    write: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``spec.agent`` on ``spec.env_id`` in ``eval_points`` chunks, evaluating on the test split after each.

    Evaluation happens once before training (step 0) and after every chunk; chunk k ends at
    ``round(k * steps / eval_points)`` env steps as counted by the agent (``num_timesteps``; agents that do not
    learn are charged the budget). An exception in the run is recorded (``status="failed"``, ``error``,
    ``traceback``, the curve so far); ``KeyboardInterrupt`` is not caught, so an interrupted run writes nothing.

    :param out_dir: the suite's output directory; TensorBoard logs go to ``runs/<run_id>/tb``.
    :param write: write ``runs/<run_id>.json`` atomically when the run ends.
    :param progress: a tqdm bar over the chunks.
    :returns: the run record (what the JSON holds).
    """
    out_dir = Path(out_dir)
    log_dir = out_dir / RUNS_DIR / spec.run_id / "tb"
    record: dict[str, Any] = {
        **_record_head(spec),
        "status": "running",
        "error": None,
        "traceback": None,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "log_dir": str(log_dir),
        "curve": [],
    }
    start = time.perf_counter()
    train_time = 0.0
    curve: list[dict[str, Any]] = record["curve"]
    envs: list[Any] = []
    agent: Any = None
    bar = None
    try:
        import aligngym.envs  # noqa: F401  (registers the ids)

        train_env = make_train_env(spec)
        envs.append(train_env)
        test_env = EpisodeInfoRecorder(make_test_env(spec))
        envs.append(test_env)
        agent_spec = get_agent_spec(spec.factory_name)
        agent = make_agent(
            spec.factory_name,
            train_env,
            seed=spec.seed,
            device=spec.device,
            log_dir=str(log_dir),
            total_timesteps=spec.steps,
            **spec.agent_kwargs,
        )
        record["device"] = str(getattr(agent, "device", spec.device))
        record["oracle"] = is_oracle(agent_spec, agent)

        def evaluate_now(budget_step: int) -> dict[str, Any]:
            step = int(getattr(agent, "num_timesteps", budget_step)) if agent_spec.learns else budget_step
            point = evaluate_point(
                agent,
                test_env,
                n_episodes=spec.eval_episodes,
                deterministic=spec.eval_deterministic,
                samples=spec.samples,
            )
            point.update(step=step, train_time=train_time, wall_time=time.perf_counter() - start)
            point.update(level_fields(train_env, test_env))
            return point

        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=spec.steps, desc=spec.run_id, unit="step", leave=False, position=1)
        curve.append(evaluate_now(0))
        for k in range(1, spec.eval_points + 1):
            target = round(k * spec.steps / spec.eval_points)
            done = (
                int(getattr(agent, "num_timesteps", 0))
                if agent_spec.learns
                else round((k - 1) * spec.steps / spec.eval_points)
            )
            t0 = time.perf_counter()
            if target - done > 0:
                agent.learn(target - done)
            train_time += time.perf_counter() - t0
            curve.append(evaluate_now(target))
            _check_curriculum_moved(spec, train_env, agent)
            if bar is not None:
                bar.update(max(0, min(target, spec.steps) - bar.n))
        record["status"] = "ok"
    except Exception as err:
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc()
    finally:
        if bar is not None:
            bar.close()
        logger = getattr(agent, "logger", None)
        if logger is not None and callable(getattr(logger, "close", None)):
            logger.close()
        for env in envs:
            try:
                env.close()
            except Exception as err:  # the run's result stands; the failure to clean up is recorded with it
                record.setdefault("cleanup_errors", []).append(f"env.close: {type(err).__name__}: {err}")
    final = curve[-1] if curve else {}
    curriculum = find_curriculum(envs[0]) if envs else None
    if curriculum is not None:
        record["curriculum"] = {
            "config": spec.curriculum,
            "moves": curriculum.controller.moves,
            **curriculum.controller.state(),
        }
    record.update(
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        wall_time=time.perf_counter() - start,
        train_time=train_time,
        env_steps=final.get("step"),
        final={k: v for k, v in final.items() if k != "samples"},
        samples=final.get("samples", []),
        samples_initial=curve[0].get("samples", []) if curve else [],
        machine=_machine(),
    )
    for point in curve[1:-1]:
        point.pop("samples", None)  # keep the first and last evaluation's samples only
    if write:
        write_json_atomic(run_json_path(out_dir, spec.run_id), record)
    return _jsonable(record)


def read_record(path: Path) -> dict[str, Any]:
    """A run record from its JSON file.

    :raises ValueError: when the file cannot be read, is not valid JSON (truncated or corrupt), is not an object, or
        has no ``run_id``; the message says which.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ValueError(f"cannot read it ({type(err).__name__}: {err})") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8 text ({err})") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON, truncated or corrupt ({err}; {len(text)} characters)") from err
    if not isinstance(data, dict):
        raise ValueError(f"a run record must be a JSON object, got {type(data).__name__}")
    if "run_id" not in data:
        raise ValueError("a JSON object without run_id (not a run record)")
    return data


def _read_record(path: Path) -> dict[str, Any] | None:
    """:func:`read_record`, or ``None`` when the file is missing or unreadable (the caller decides what that means)."""
    try:
        return read_record(path)
    except ValueError:
        return None


def finished_record(out_dir: str | Path, spec: RunSpec) -> dict[str, Any] | None:
    """The stored record of ``spec`` when it finished with status ok, the same fingerprint and this harness's
    :data:`SCHEMA_VERSION` (a record of an older harness lacks today's metrics: it runs again), else ``None``."""
    rec = _read_record(run_json_path(out_dir, spec.run_id))
    if (
        rec
        and rec.get("status") == "ok"
        and rec.get("fingerprint") == spec.fingerprint()
        and rec.get("schema") == SCHEMA_VERSION
    ):
        return rec
    return None


def _spec_oracle(spec: RunSpec) -> bool:
    """The agent table's oracle label of ``spec`` (``False`` for an agent the table cannot name)."""
    try:
        return get_agent_spec(spec.factory_name).oracle
    except ValueError:
        return False


def _record_head(spec: RunSpec) -> dict[str, Any]:
    """The fields that identify a run, shared by the record of a run and the record of a failed one."""
    return {
        "schema": SCHEMA_VERSION,
        "run_id": spec.run_id,
        "fingerprint": spec.fingerprint(),
        "spec": dataclasses.asdict(spec),
        "env_id": spec.env_id,
        "agent": spec.agent,
        "agent_name": spec.factory_name,
        "seed": spec.seed,
        "oracle": _spec_oracle(spec),
    }


def _failed_record(spec: RunSpec, err: BaseException) -> dict[str, Any]:
    return {
        **_record_head(spec),
        "status": "failed",
        "error": f"{type(err).__name__}: {err}",
        "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
        "curve": [],
        "final": {},
        "samples": [],
    }
