"""The interface every aligngym agent follows: the one learn loop, logging, checkpoint I/O and evaluation.

An agent is ``Agent(env, config)`` with ``learn(total_timesteps, callback=None) -> self``, SB3's
``predict(obs, state=None, episode_start=None, deterministic=False) -> (action, state)`` and ``save(dir)`` /
``load(dir)``. ``learn`` repeats the algorithm's ``collect(venv)`` / ``update(batch)`` and owns the budget, progress
bar, SPS, TensorBoard scalars, periodic checkpoints and callbacks. Checkpoints are a directory: ``agent.json``
(config + env signature + the weights' SHA-256) and ``weights.safetensors``; both are written atomically (temp file,
fsync, ``os.replace``) and nothing is ever pickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np

from aligngym.envs.device import resolve_device

CHECKPOINT_VERSION = 1
CONFIG_FILE = "agent.json"
WEIGHTS_FILE = "weights.safetensors"

A = TypeVar("A", bound="Agent")
#: ``callback(agent, metrics) -> False`` stops ``learn``; called after every episode batch / update.
Callback = Callable[["Agent", dict[str, float]], Any]


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated or corrupted, or made for another agent or env.

    The SHA-256 in ``agent.json`` detects corruption (a torn or truncated write, a flipped byte); it is not a
    signature: whoever can edit the weights can edit the hash next to them, so it does not detect tampering.
    """


@dataclasses.dataclass
class AgentConfig:
    """Options every agent has.

    :param seed: seeds the agent's numpy generator and torch.
    :param device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    :param log_dir: TensorBoard directory (``charts/*``, ``losses/*``); ``None`` logs to memory only.
    :param progress_bar: show a tqdm bar during ``learn``.
    :param checkpoint_every: save to ``checkpoint_dir`` every this many env steps (0: never).
    :param checkpoint_dir: where periodic checkpoints go; ``learn`` resumes from :meth:`Agent.load`.
    """

    seed: int = 0
    device: str = "auto"
    log_dir: str | None = None
    progress_bar: bool = False
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None


class MetricLogger:
    """Scalars to TensorBoard (when ``log_dir`` is set) and to an in-memory history for learning curves."""

    def __init__(self, log_dir: str | None = None) -> None:
        self.log_dir = log_dir
        self.history: list[dict[str, float]] = []
        self._writer: Any = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir)

    def log(self, step: int, **scalars: float) -> None:
        row = {"step": float(step)}
        for key, value in scalars.items():
            v = float(value)
            row[key] = v
            if self._writer is not None:
                self._writer.add_scalar(key, v, step)
        self.history.append(row)

    def latest(self, key: str, default: float = float("nan")) -> float:
        for row in reversed(self.history):
            if key in row:
                return row[key]
        return default

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def env_signature(env: Any) -> dict[str, Any]:
    """What a checkpoint must match: observation length, vocabulary size, number of actions, env id."""
    obs_space = getattr(env, "single_observation_space", None) or env.observation_space
    act_space = getattr(env, "single_action_space", None) or env.action_space
    sig: dict[str, Any] = {}
    if isinstance(obs_space, gym.spaces.Dict) and "input_ids" in obs_space.spaces:
        box = obs_space["input_ids"]
        assert isinstance(box, gym.spaces.Box)
        sig["seq_len"] = int(box.shape[0])
        sig["vocab_size"] = int(np.max(box.high)) + 1
    if isinstance(act_space, gym.spaces.Discrete):
        sig["n_actions"] = int(act_space.n)
    elif isinstance(act_space, gym.spaces.MultiDiscrete):
        sig["n_actions"] = int(act_space.nvec.flat[0])
        sig["completion_len"] = int(act_space.nvec.size)
    spec = getattr(env, "spec", None)
    if spec is not None and getattr(spec, "id", None):
        sig["env_id"] = spec.id
    return sig


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (the caller renames it into place)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def add_batch_dim(obs: Any) -> tuple[dict[str, np.ndarray], bool]:
    """Observation dict as batched int64 arrays (B, L); returns whether a batch dim was added."""
    if not isinstance(obs, dict) or "input_ids" not in obs:
        raise TypeError("expected an aligngym observation dict with 'input_ids' and 'attention_mask'")
    ids = np.asarray(obs["input_ids"])
    mask = np.asarray(obs.get("attention_mask", np.ones_like(ids)))
    single = ids.ndim == 1
    if single:
        ids, mask = ids[None], mask[None]
    if ids.ndim != 2 or mask.shape != ids.shape:
        raise ValueError(
            f"input_ids must have shape (L,) or (B, L) with a matching mask, got {ids.shape}, {mask.shape}"
        )
    return {
        "input_ids": ids.astype(np.int64, copy=False),
        "attention_mask": mask.astype(np.int64, copy=False),
    }, single


class Agent(ABC):
    """Base class of aligngym's own agents (see the module docstring for the contract)."""

    Config: ClassVar[type[AgentConfig]] = AgentConfig
    algo_name: ClassVar[str] = "agent"

    def __init__(self, env: Any, config: AgentConfig | None = None) -> None:
        config = config if config is not None else self.Config()
        if not isinstance(config, self.Config):
            raise TypeError(
                f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}"
            )
        self.env = env
        self.config = config
        self.device = resolve_device(config.device) if self.uses_torch else "cpu"
        self.num_timesteps = 0
        self.num_episodes = 0
        self.rng = np.random.default_rng(config.seed)
        if self.uses_torch:
            import torch

            torch.manual_seed(config.seed)
        self.logger = MetricLogger(config.log_dir)
        self.signature = env_signature(env) if env is not None else {}
        self._venv: Any = env if isinstance(env, gym.vector.VectorEnv) else None

    #: whether the agent needs torch (resolves ``device``, seeds torch)
    uses_torch: ClassVar[bool] = True

    # -- the contract ----------------------------------------------------------------------------------------------
    def learn(self: A, total_timesteps: int, callback: Callback | None = None) -> A:
        """Train for ``total_timesteps`` more env steps (tokens for token-level envs, completions for sequence-level
        ones): repeat ``batch = collect(venv)``, ``metrics = update(batch)`` until the budget is spent.

        This loop owns what every algorithm shares: the budget (the last update may run past it by one batch), the
        progress bar, ``charts/SPS``, the rollout scalars (``charts/episodic_return``, ``charts/episodic_length``,
        ``charts/score``, ``charts/learning_rate``), logging every ``config.log_interval`` updates (default 1),
        periodic checkpoints (``checkpoint_every`` / ``checkpoint_dir``) and the callback.

        :param total_timesteps: env steps to learn from, >= 0.
        :param callback: ``callback(agent, metrics)`` after every update; returning ``False`` stops.
        :returns: ``self``.
        """
        if total_timesteps < 0:
            raise ValueError(f"total_timesteps must be >= 0, got {total_timesteps}")
        venv = self._vector_env()
        end = self.num_timesteps + total_timesteps
        last_saved = self.num_timesteps
        bar = self._progress(total_timesteps)
        log_every = int(getattr(self.config, "log_interval", 1))
        t0, steps0 = time.perf_counter(), self.num_timesteps
        try:
            while self.num_timesteps < end:
                batch = self.collect(venv)
                metrics = self.update(batch)
                n_steps = int(batch["num_steps"])
                self.num_timesteps += n_steps
                self.num_episodes += len(batch["episode_returns"])
                metrics.update(self._rollout_metrics(batch, t0, steps0))
                if getattr(self, "num_updates", 0) % log_every == 0:
                    self.logger.log(self.num_timesteps, **metrics)
                if bar is not None:
                    bar.update(n_steps)
                last_saved = self._maybe_checkpoint(last_saved)
                if callback is not None and callback(self, metrics) is False:
                    break
        finally:
            if bar is not None:
                bar.close()
        return self

    def collect(self, venv: Any) -> dict[str, Any]:
        """Play one rollout batch in ``venv`` with the current policy (the algorithm's half of :meth:`learn`).

        :returns: a dict with at least ``num_steps`` (env steps learned from), ``episode_returns``,
            ``episode_scores`` and ``episode_lengths`` (one entry per finished episode), plus whatever
            :meth:`update` needs.
        """
        raise NotImplementedError(f"{type(self).__name__} overrides learn() and has no collect()")

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """Learn from one :meth:`collect` batch; returns the scalars to log (``losses/*``, ``charts/*``)."""
        raise NotImplementedError(f"{type(self).__name__} overrides learn() and has no update()")

    def rollout_envs(self) -> int:
        """Sub-envs a single env is copied into for :meth:`collect` (``config.num_envs`` when it has one, else 1)."""
        return int(getattr(self.config, "num_envs", 1))

    def _vector_env(self) -> Any:
        """The vector env :meth:`learn` collects in: ``env`` itself, or ``rollout_envs()`` copies of it."""
        from aligngym.agents.vector_envs import as_vector_env

        if getattr(self, "_venv", None) is None:
            self._venv = as_vector_env(self.env, self.rollout_envs())
        return self._venv

    def _rollout_metrics(self, batch: dict[str, Any], t0: float, steps0: int) -> dict[str, float]:
        """The scalars every agent logs the same way (CleanRL's names)."""
        out = {
            "charts/episodic_return": float(np.mean(batch["episode_returns"])),
            "charts/episodic_length": float(np.mean(batch["episode_lengths"])),
            "charts/score": float(np.mean(batch["episode_scores"])),
            "charts/SPS": (self.num_timesteps - steps0) / max(time.perf_counter() - t0, 1e-9),
        }
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None:
            out["charts/learning_rate"] = float(optimizer.param_groups[0]["lr"])
        return out

    @abstractmethod
    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Actions for one observation or a batch (SB3's signature); ``state`` is passed through."""

    def state_arrays(self) -> dict[str, Any]:
        """Everything learned, as named numpy arrays or torch tensors (saved with safetensors)."""
        raise NotImplementedError

    def load_state_arrays(self, arrays: dict[str, Any]) -> None:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """JSON-serializable training state beyond the arrays (counters, adaptive coefficients)."""
        return {}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        del extra

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``agent.json`` + ``weights.safetensors`` into the directory ``path``, atomically.

        Both files are first written in full to ``*.tmp`` files in the same directory and fsynced; then the weights
        and then ``agent.json`` are moved into place with ``os.replace``. A save interrupted at any byte leaves the
        previous checkpoint readable, or (interrupted between the two renames) the new one, which
        :meth:`read_checkpoint` completes from ``agent.json.tmp``; a torn file is refused with
        :class:`CheckpointError`, never loaded.
        """
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        arrays = self.state_arrays()
        if arrays and all(isinstance(v, np.ndarray) for v in arrays.values()):
            from safetensors.numpy import save as save_numpy

            blob = save_numpy({k: np.ascontiguousarray(v) for k, v in arrays.items()})
            kind = "numpy"
        else:
            from safetensors.torch import save as save_torch

            blob = save_torch({k: v.detach().contiguous().cpu() for k, v in arrays.items()})
            kind = "torch"
        meta = {
            "format_version": CHECKPOINT_VERSION,
            "algo": self.algo_name,
            "config": dataclasses.asdict(self.config),
            "signature": self.signature,
            "num_timesteps": self.num_timesteps,
            "num_episodes": self.num_episodes,
            "rng_state": self.rng.bit_generator.state,
            "extra": self.extra_state(),
            "weights_kind": kind,
            "weights_sha256": hashlib.sha256(blob).hexdigest(),
        }
        text = json.dumps(meta, indent=2, default=_json_default).encode()
        weights, cfg = out / WEIGHTS_FILE, out / CONFIG_FILE
        weights_tmp, cfg_tmp = out / (WEIGHTS_FILE + ".tmp"), out / (CONFIG_FILE + ".tmp")
        _write_durably(weights_tmp, blob)
        _write_durably(cfg_tmp, text)
        os.replace(weights_tmp, weights)
        os.replace(cfg_tmp, cfg)  # the commit point
        _fsync_dir(out)
        return out

    @classmethod
    def read_checkpoint(cls, path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read and verify a checkpoint directory: ``(meta, arrays)``.

        :raises CheckpointError: missing files, invalid JSON, a hash mismatch (truncated or corrupted weights),
            a checkpoint of another algorithm, or unreadable safetensors.
        """
        root = Path(path)
        cfg, weights = root / CONFIG_FILE, root / WEIGHTS_FILE
        if not cfg.is_file() or not weights.is_file():
            raise CheckpointError(
                f"{root} is not an aligngym checkpoint: expected {CONFIG_FILE} and {WEIGHTS_FILE}"
            )
        meta = _read_meta(cfg)
        digest = _sha256(weights)
        if digest != meta.get("weights_sha256"):
            pending = root / (CONFIG_FILE + ".tmp")  # a save stopped between its two renames: complete it
            try:
                staged = _read_meta(pending) if pending.is_file() else None
            except CheckpointError:
                staged = None  # torn while it was being written: the save never reached its renames
            if staged is not None and staged.get("weights_sha256") == digest:
                meta = staged
                try:
                    os.replace(pending, cfg)
                except OSError:
                    pass  # a read-only checkpoint still loads
        if meta.get("algo") != cls.algo_name:
            raise CheckpointError(f"{root} holds a {meta.get('algo')!r} checkpoint, not {cls.algo_name!r}")
        if meta.get("format_version") != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{root}: checkpoint format {meta.get('format_version')} != {CHECKPOINT_VERSION}"
            )
        if digest != meta.get("weights_sha256"):
            raise CheckpointError(
                f"{weights} does not match the SHA-256 in {CONFIG_FILE}: the checkpoint is truncated or corrupted"
            )
        try:
            if meta.get("weights_kind") == "numpy":
                from safetensors.numpy import load_file

                arrays: dict[str, Any] = dict(load_file(str(weights)))
            else:
                from safetensors.torch import load_file as load_torch

                arrays = dict(load_torch(str(weights)))
        except Exception as err:
            raise CheckpointError(f"{weights} is not a readable safetensors file: {err}") from err
        return meta, arrays

    @classmethod
    def load(cls: type[A], path: str | Path, env: Any = None, **config_overrides: Any) -> A:
        """Rebuild an agent from :meth:`save`'s directory, checking it against ``env`` when given.

        :param config_overrides: config fields to change (``device="cpu"``, ``log_dir=None`` ...).
        :raises CheckpointError: see :meth:`read_checkpoint`; also when ``env`` differs from the saved signature.
        """
        meta, arrays = cls.read_checkpoint(path)
        saved_sig = meta.get("signature", {})
        if env is not None:
            sig = env_signature(env)
            diff = {
                k: (saved_sig[k], sig[k])
                for k in saved_sig
                if k in sig and k != "env_id" and saved_sig[k] != sig[k]
            }
            if diff:
                detail = ", ".join(f"{k}: saved {a} vs env {b}" for k, (a, b) in diff.items())
                raise CheckpointError(f"checkpoint {path} was made for another env ({detail})")
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        cfg_dict = {k: v for k, v in meta["config"].items() if k in fields}
        cfg_dict.update(config_overrides)
        config = cls.Config(**cfg_dict)
        agent = cls._from_checkpoint(env, config, meta)
        agent.load_state_arrays(arrays)
        agent.num_timesteps = int(meta.get("num_timesteps", 0))
        agent.num_episodes = int(meta.get("num_episodes", 0))
        if meta.get("rng_state"):
            agent.rng.bit_generator.state = meta["rng_state"]
        agent.load_extra_state(meta.get("extra", {}))
        return agent

    @classmethod
    def _from_checkpoint(cls: type[A], env: Any, config: AgentConfig, meta: dict[str, Any]) -> A:
        """Construct an untrained agent before its arrays are loaded (override when ``env`` may be None)."""
        if env is None:
            raise CheckpointError(f"{cls.__name__}.load needs env= to rebuild the agent")
        return cls(env, config)

    # -- helpers for subclasses ------------------------------------------------------------------------------------
    def _maybe_checkpoint(self, last_saved_step: int) -> int:
        """Save to ``checkpoint_dir`` when ``checkpoint_every`` steps have passed; returns the step last saved."""
        every, where = self.config.checkpoint_every, self.config.checkpoint_dir
        if every and where and self.num_timesteps - last_saved_step >= every:
            self.save(where)
            return self.num_timesteps
        return last_saved_step

    def _progress(self, total: int) -> Any:
        if not self.config.progress_bar:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=self.algo_name, unit="step")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.num_timesteps}, device={self.device!r})"


def _read_meta(path: Path) -> dict[str, Any]:
    """``agent.json`` as a dict. :raises CheckpointError: when it is not a complete JSON object."""
    try:
        meta = json.loads(path.read_bytes().decode())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise CheckpointError(f"{path} is not valid JSON (truncated or corrupted): {err}") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} holds {type(meta).__name__}, not a checkpoint's JSON object")
    return meta


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


class RandomAgent(Agent):
    """Uniform random actions among the valid ones (``action_masks()`` when the env has it): the baseline."""

    algo_name = "random"
    uses_torch = False

    def learn(self, total_timesteps: int, callback: Callback | None = None) -> RandomAgent:
        return self

    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        batch, single = add_batch_dim(obs)
        space = getattr(self.env, "single_action_space", None) or self.env.action_space
        masks_fn = getattr(getattr(self.env, "unwrapped", self.env), "action_masks", None)
        b = batch["input_ids"].shape[0]
        if isinstance(space, gym.spaces.Discrete):
            mask = np.asarray(masks_fn()) if masks_fn is not None and single else np.ones(space.n, dtype=bool)
            valid = np.flatnonzero(mask) if mask.ndim == 1 else np.arange(space.n)
            actions = self.rng.choice(valid, size=b)
        else:
            actions = np.stack([self.rng.integers(0, space.nvec) for _ in range(b)])
        return (actions[0] if single else actions), state

    def state_arrays(self) -> dict[str, Any]:
        return {"seed": np.array([self.config.seed], dtype=np.int64)}

    def load_state_arrays(self, arrays: dict[str, Any]) -> None:
        return None


def evaluate(
    agent: Any,
    env: gym.Env,
    n_episodes: int | None = None,
    deterministic: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Run whole episodes with ``agent.predict`` and summarise them.

    :param n_episodes: ``None`` runs every prompt of an aligngym env once (via ``options={"prompt_index": i}``);
        otherwise that many episodes on prompts drawn with ``seed``.
    :returns: ``mean_return``, ``std_return``, ``mean_score``, ``std_score``, ``mean_length`` (tokens),
        ``returns``, ``scores``, ``completions`` (list of (prompt, completion)) and ``wall_time``.
    """
    runtime = getattr(env.unwrapped, "runtime", None)
    if n_episodes is None:
        if runtime is None:
            raise ValueError(
                "n_episodes=None needs an aligngym env (to walk its prompt set); give n_episodes"
            )
        plan: list[dict[str, Any] | None] = [{"prompt_index": i} for i in range(len(runtime.rows))]
    else:
        if n_episodes <= 0:
            raise ValueError(f"n_episodes must be positive, got {n_episodes}")
        plan = [None] * n_episodes
    start = time.perf_counter()
    returns, scores, lengths, completions = [], [], [], []
    for k, options in enumerate(plan):
        obs, info = env.reset(seed=seed + k, options=options)
        done, total, state = False, 0.0, None
        episode_start = np.ones(1, dtype=bool)
        while not done:
            action, state = agent.predict(
                obs, state=state, episode_start=episode_start, deterministic=deterministic
            )
            episode_start = np.zeros(1, dtype=bool)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            done = bool(terminated or truncated)
        returns.append(total)
        scores.append(float(info.get("score", total)))
        lengths.append(len(info.get("completion_ids", ())))
        completions.append((info.get("prompt", ""), info.get("completion", "")))
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_score": float(np.mean(scores)),
        "std_score": float(np.std(scores)),
        "mean_length": float(np.mean(lengths)),
        "returns": returns,
        "scores": scores,
        "completions": completions,
        "wall_time": time.perf_counter() - start,
    }
