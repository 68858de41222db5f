"""Tabular Q-learning on token-level envs: a numpy table keyed by the observed token ids.

A state is the visible prompt + completion so far (``input_ids`` where ``attention_mask`` is 1), an action is an
index of the env's ``Discrete`` space (a restricted ``action_vocab`` keeps the table small). Exact for tasks such as
``aligngym/Target-Token-v0``; run ``python -m aligngym.agents.tabular --env aligngym/Target-Token-v0 --steps 40000``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from aligngym.agents.base import Agent, AgentConfig, Callback, CheckpointError, add_batch_dim

EXPLORATION_MODES = ("epsilon_greedy", "softmax")
ON_FULL_POLICIES = ("error", "freeze")


@dataclasses.dataclass
class QLearningConfig(AgentConfig):
    """Hyper-parameters of :class:`QLearningAgent` (plus :class:`~aligngym.agents.base.AgentConfig`'s).

    :param learning_rate: step size of the update Q(s,a) += lr * (r + gamma * max_a' Q(s',a') - Q(s,a)); 1.0 is
        exact for aligngym's token envs (the next state and the score are deterministic given state and action);
        lower it for noisy rewards.
    :param gamma: discount; 1.0 suits the token envs (bounded horizon, the score is paid at the end).
    :param exploration: ``"epsilon_greedy"`` (random valid action with probability epsilon, else greedy with random
        tie-breaking) or ``"softmax"`` (Boltzmann: P(a) proportional to exp(Q(s,a) / temperature) over valid actions).
    :param epsilon_start: epsilon at step 0 (``epsilon_greedy``).
    :param epsilon_end: epsilon after ``exploration_steps`` (linear decay, then constant).
    :param temperature_start: temperature at step 0 (``softmax``), in units of Q (reward).
    :param temperature_end: temperature after ``exploration_steps`` (linear decay, then constant).
    :param exploration_steps: agent steps over which epsilon / temperature decay; ``None``: ``exploration_fraction``
        of the first ``learn`` call's budget (fixed then and saved, so a resumed run follows the same schedule).
    :param exploration_fraction: see ``exploration_steps``.
    :param initial_q: value of unvisited (state, action) pairs (> the best return is optimistic exploration).
    :param max_states: table capacity in states.
    :param on_full: what happens when a new state arrives and the table is full: ``"error"`` raises
        ``RuntimeError``; ``"freeze"`` keeps the table as it is (new states read as ``initial_q``, their updates are
        dropped and counted in ``charts/dropped_updates``).
    :param log_interval: log the means of this many episodes at a time (``charts/*``, ``losses/td_error``).
    """

    learning_rate: float = 1.0
    gamma: float = 1.0
    exploration: str = "epsilon_greedy"
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    temperature_start: float = 0.5
    temperature_end: float = 0.01
    exploration_steps: int | None = None
    exploration_fraction: float = 0.8
    initial_q: float = 0.0
    max_states: int = 1_000_000
    on_full: str = "error"
    log_interval: int = 10

    def __post_init__(self) -> None:
        if self.exploration not in EXPLORATION_MODES:
            raise ValueError(f"exploration must be one of {EXPLORATION_MODES}, got {self.exploration!r}")
        if self.on_full not in ON_FULL_POLICIES:
            raise ValueError(f"on_full must be one of {ON_FULL_POLICIES}, got {self.on_full!r}")
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        for name in ("epsilon_start", "epsilon_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("temperature_start", "temperature_end"):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.exploration_steps is not None and self.exploration_steps < 0:
            raise ValueError(f"exploration_steps must be >= 0 or None, got {self.exploration_steps}")
        if not 0.0 <= self.exploration_fraction <= 1.0:
            raise ValueError(f"exploration_fraction must be in [0, 1], got {self.exploration_fraction}")
        if self.max_states <= 0 or self.log_interval <= 0:
            raise ValueError(
                f"max_states and log_interval must be positive, got {self.max_states}, {self.log_interval}"
            )


class QTable:
    """Growable Q-table: state key (bytes of the visible token ids) -> row of Q-values and of valid-action flags.

    :param seq_len: L, the observation length; keys are stored as int64 rows (L,) with -1 where the mask is 0.
    :param n_actions: k, the number of actions.
    """

    def __init__(self, seq_len: int, n_actions: int, initial_q: float, max_states: int) -> None:
        self.seq_len, self.n_actions, self.initial_q, self.max_states = (
            seq_len,
            n_actions,
            initial_q,
            max_states,
        )
        cap = min(1024, max_states)
        self.keys = np.full((cap, seq_len), -1, dtype=np.int64)
        self.values = np.full((cap, n_actions), initial_q, dtype=np.float64)
        self.valid = np.ones((cap, n_actions), dtype=bool)
        self.index: dict[bytes, int] = {}
        self.size = 0

    @staticmethod
    def key_row(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Visible token ids (int64, (L,)), -1 where ``mask`` is 0."""
        return np.where(mask.astype(bool), ids, -1).astype(np.int64, copy=False)

    def lookup(self, key_row: np.ndarray) -> int:
        """Row of a state, or -1 when unseen."""
        return self.index.get(key_row.tobytes(), -1)

    @property
    def full(self) -> bool:
        return self.size >= self.max_states

    def add(self, key_row: np.ndarray, valid: np.ndarray | None) -> int:
        """Insert an unseen state (the caller checks ``full``); returns its row."""
        if self.size == self.keys.shape[0]:
            cap = min(2 * self.size, self.max_states)
            self.keys = np.concatenate([self.keys, np.full((cap - self.size, self.seq_len), -1, np.int64)])
            self.values = np.concatenate(
                [self.values, np.full((cap - self.size, self.n_actions), self.initial_q)]
            )
            self.valid = np.concatenate([self.valid, np.ones((cap - self.size, self.n_actions), bool)])
        row = self.size
        self.keys[row] = key_row
        if valid is not None:
            self.valid[row] = valid
        self.index[key_row.tobytes()] = row
        self.size += 1
        return row

    def best_value(self, row: int) -> float:
        """max over valid actions of Q(s, .) (``initial_q`` for an unknown state)."""
        if row < 0:
            return self.initial_q
        return float(np.max(self.values[row][self.valid[row]]))


class QLearningAgent(Agent):
    """Q-learning (Watkins) with a numpy table keyed by the observed token ids; works on ``Discrete`` token envs.

    ``learn`` runs one env (not a vector env) and updates after every step; at ``terminated`` nothing is
    bootstrapped (the score was paid and nothing follows), at ``truncated`` (an outer ``TimeLimit``) the next state
    is. Every episode starts with ``env.reset(seed=...)`` drawn from the agent's generator, and checkpoints are taken
    at episode ends, so loading a checkpoint and learning the remaining steps reproduces an uninterrupted run
    exactly. Valid actions come from ``info["action_mask"]`` or ``env.unwrapped.action_masks()`` and are stored
    with each state; ``predict`` on an unseen state chooses among actions valid somewhere in training.

    :param env: a token-level env with a ``Discrete`` action space (``gym.make("aligngym/Target-Token-v0")``).
    :param config: :class:`QLearningConfig`.
    """

    Config: ClassVar[type[AgentConfig]] = QLearningConfig
    algo_name: ClassVar[str] = "q_learning"
    uses_torch: ClassVar[bool] = False

    def __init__(self, env: Any, config: QLearningConfig | None = None) -> None:
        super().__init__(env, config)
        self.config: QLearningConfig
        if isinstance(env, gym.vector.VectorEnv):
            raise TypeError("QLearningAgent learns from one env, got a VectorEnv; pass gym.make(id) instead")
        if "n_actions" not in self.signature or "completion_len" in self.signature:
            raise TypeError(f"QLearningAgent needs a Discrete action space, got {env.action_space}")
        if "seq_len" not in self.signature:
            raise TypeError(
                f"QLearningAgent needs a Dict observation with input_ids / attention_mask, got {env.observation_space}"
            )
        self.n_actions = int(self.signature["n_actions"])
        self.seq_len = int(self.signature["seq_len"])
        cfg = self.config
        self.table = QTable(self.seq_len, self.n_actions, cfg.initial_q, cfg.max_states)
        self.support = np.zeros(self.n_actions, dtype=bool)  # actions valid in at least one visited state
        self.exploration_horizon: int | None = cfg.exploration_steps
        self.dropped_updates = 0
        self._episode: dict[str, Any] | None = None  # an episode left unfinished by the previous learn() call

    # -- exploration -----------------------------------------------------------------------------------------------
    def _progress_fraction(self) -> float:
        horizon = self.exploration_horizon
        if not horizon:
            return 1.0
        return min(1.0, self.num_timesteps / horizon)

    @property
    def epsilon(self) -> float:
        """Current epsilon of the linear schedule (``epsilon_greedy``)."""
        c = self.config
        return c.epsilon_start + (c.epsilon_end - c.epsilon_start) * self._progress_fraction()

    @property
    def temperature(self) -> float:
        """Current temperature of the linear schedule (``softmax``)."""
        c = self.config
        return c.temperature_start + (c.temperature_end - c.temperature_start) * self._progress_fraction()

    def _valid_of(self, row: int, mask: np.ndarray | None) -> np.ndarray:
        if mask is not None:
            return mask
        if row >= 0:
            return self.table.valid[row]
        return self.support if self.support.any() else np.ones(self.n_actions, dtype=bool)

    def _explore(self, row: int, valid: np.ndarray) -> int:
        """One action of the behaviour policy (epsilon-greedy or Boltzmann) at the current schedule value."""
        choices = np.flatnonzero(valid)
        q = self.table.values[row][choices] if row >= 0 else np.full(choices.size, self.table.initial_q)
        if self.config.exploration == "epsilon_greedy":
            if self.rng.random() < self.epsilon:
                return int(self.rng.choice(choices))
            best = choices[q == q.max()]
            return int(best[0] if best.size == 1 else self.rng.choice(best))
        z = (q - q.max()) / self.temperature
        p = np.exp(z)
        p /= p.sum()
        return int(
            choices[min(np.searchsorted(np.cumsum(p), self.rng.random(), side="right"), choices.size - 1)]
        )

    def _greedy(self, row: int, valid: np.ndarray) -> int:
        choices = np.flatnonzero(valid)
        if row < 0:
            return int(choices[0])
        return int(choices[np.argmax(self.table.values[row][choices])])

    # -- the contract ----------------------------------------------------------------------------------------------
    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        """Greedy (``deterministic=True``, lowest index on ties) or exploring actions for one obs or a batch.

        :param obs: ``{"input_ids", "attention_mask"}``, int64 (L,) or (B, L).
        :param action_masks: bool (k,) or (B, k) valid actions; default: those stored with the state.
        :returns: int64 action(s), () or (B,), and ``state`` unchanged.
        """
        batch, single = add_batch_dim(obs)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if ids.shape[1] != self.seq_len:
            raise ValueError(f"observation length {ids.shape[1]} != the agent's seq_len {self.seq_len}")
        masks = None if action_masks is None else np.asarray(action_masks, dtype=bool).reshape(len(ids), -1)
        out = np.empty(len(ids), dtype=np.int64)
        for i in range(len(ids)):
            row = self.table.lookup(QTable.key_row(ids[i], mask[i]))
            valid = self._valid_of(row, None if masks is None else masks[i])
            out[i] = self._greedy(row, valid) if deterministic else self._explore(row, valid)
        return (out[0] if single else out), state

    def q_values(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Q(s, .) (float64, (k,)) of one observation; ``initial_q`` everywhere for an unseen state."""
        batch, _ = add_batch_dim(obs)
        row = self.table.lookup(QTable.key_row(batch["input_ids"][0], batch["attention_mask"][0]))
        return self.table.values[row].copy() if row >= 0 else np.full(self.n_actions, self.table.initial_q)

    def _mask_from(self, info: dict[str, Any]) -> np.ndarray | None:
        if "action_mask" in info:
            return np.asarray(info["action_mask"], dtype=bool).reshape(self.n_actions)
        fn = getattr(getattr(self.env, "unwrapped", self.env), "action_masks", None)
        return np.asarray(fn(), dtype=bool).reshape(self.n_actions) if fn is not None else None

    def _state_row(self, obs: dict[str, np.ndarray], mask: np.ndarray | None) -> tuple[np.ndarray, int]:
        """Key and table row of a state, inserting it when new (or -1 when the table is frozen full)."""
        key = QTable.key_row(np.asarray(obs["input_ids"]), np.asarray(obs["attention_mask"]))
        row = self.table.lookup(key)
        if row < 0:
            if self.table.full:
                if self.config.on_full == "error":
                    raise RuntimeError(
                        f"Q-table is full (max_states={self.config.max_states}); raise max_states, restrict "
                        "action_vocab / max_new_tokens, or pass on_full='freeze' to stop adding states"
                    )
            else:
                row = self.table.add(key, mask)
        if mask is not None:
            self.support |= mask
        return key, row

    def _start_episode(self) -> dict[str, Any]:
        seed = int(self.rng.integers(2**31 - 1))
        obs, info = self.env.reset(seed=seed)
        mask = self._mask_from(info)
        _, row = self._state_row(obs, mask)
        return {"row": row, "mask": mask, "return": 0.0, "length": 0, "td": 0.0}

    def learn(self, total_timesteps: int, callback: Callback | None = None) -> QLearningAgent:
        """Run ``total_timesteps`` more env steps, updating the table after each (see the class docstring).

        :param callback: ``callback(agent, metrics)`` after every episode; returning ``False`` stops.
        """
        if total_timesteps < 0:
            raise ValueError(f"total_timesteps must be >= 0, got {total_timesteps}")
        cfg, table = self.config, self.table
        if self.exploration_horizon is None:
            self.exploration_horizon = int(cfg.exploration_fraction * total_timesteps)
        end = self.num_timesteps + total_timesteps
        last_saved = self.num_timesteps
        window: dict[str, list[float]] = {"return": [], "score": [], "length": [], "td": []}
        bar = self._progress(total_timesteps)
        t0, steps0 = time.perf_counter(), self.num_timesteps
        ep = self._episode
        stop = False
        while self.num_timesteps < end and not stop:
            if ep is None:
                ep = self._start_episode()
            row, mask = ep["row"], ep["mask"]
            valid = self._valid_of(row, mask)
            action = self._explore(row, valid)
            obs, reward, terminated, truncated, info = self.env.step(action)
            reward = float(reward)
            self.num_timesteps += 1
            ep["return"] += reward
            ep["length"] += 1
            next_mask = None if terminated else self._mask_from(info)
            next_row = -1
            target = reward
            if not terminated:
                _, next_row = self._state_row(obs, next_mask)
                target += cfg.gamma * table.best_value(next_row)
            if row >= 0:
                td = target - table.values[row, action]
                table.values[row, action] += cfg.learning_rate * td
                ep["td"] += abs(td)
            else:
                self.dropped_updates += 1
            if bar is not None:
                bar.update(1)
            if terminated or truncated:
                self.num_episodes += 1
                window["return"].append(ep["return"])
                window["score"].append(float(info.get("score", ep["return"])))
                window["length"].append(ep["length"])
                window["td"].append(ep["td"] / ep["length"])
                ep = None
                metrics = {"episodic_return": window["return"][-1], "table_size": float(table.size)}
                if len(window["return"]) >= cfg.log_interval:
                    self._log_window(window, t0, steps0)
                last_saved = self._maybe_checkpoint(last_saved)
                if callback is not None and callback(self, metrics) is False:
                    stop = True
            else:
                ep["row"], ep["mask"] = next_row, next_mask
        self._episode = ep
        if window["return"]:
            self._log_window(window, t0, steps0)
        if bar is not None:
            bar.close()
        return self

    def _log_window(self, window: dict[str, list[float]], t0: float, steps0: int) -> None:
        explore = (
            {"charts/epsilon": self.epsilon}
            if self.config.exploration == "epsilon_greedy"
            else {"charts/temperature": self.temperature}
        )
        self.logger.log(
            self.num_timesteps,
            **{
                "charts/episodic_return": float(np.mean(window["return"])),
                "charts/score": float(np.mean(window["score"])),
                "charts/episodic_length": float(np.mean(window["length"])),
                "charts/table_size": float(self.table.size),
                "charts/dropped_updates": float(self.dropped_updates),
                "charts/SPS": (self.num_timesteps - steps0) / max(time.perf_counter() - t0, 1e-9),
                "losses/td_error": float(np.mean(window["td"])),
                **explore,
            },
        )
        for values in window.values():
            values.clear()

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, Any]:
        """``keys`` int64 (N, L) (-1 = masked), ``values`` float64 (N, k), ``valid`` uint8 (N, k), ``support`` (k,)."""
        n = self.table.size
        return {
            "keys": self.table.keys[:n].copy(),
            "values": self.table.values[:n].copy(),
            "valid": self.table.valid[:n].astype(np.uint8),
            "support": self.support.astype(np.uint8),
        }

    def load_state_arrays(self, arrays: dict[str, Any]) -> None:
        missing = {"keys", "values", "valid", "support"} - set(arrays)
        if missing:
            raise CheckpointError(f"Q-learning checkpoint lacks arrays {sorted(missing)}")
        keys, values, valid = arrays["keys"], arrays["values"], arrays["valid"]
        n = keys.shape[0]
        expected = {"keys": (n, self.seq_len), "values": (n, self.n_actions), "valid": (n, self.n_actions)}
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise CheckpointError(
                    f"checkpoint array {name!r} has shape {arrays[name].shape}, expected {shape}"
                )
        if arrays["support"].shape != (self.n_actions,):
            raise CheckpointError(
                f"checkpoint array 'support' has shape {arrays['support'].shape}, expected ({self.n_actions},)"
            )
        if n > self.config.max_states:
            raise CheckpointError(f"checkpoint holds {n} states but max_states={self.config.max_states}")
        table = QTable(self.seq_len, self.n_actions, self.config.initial_q, self.config.max_states)
        for i in range(n):
            table.add(keys[i].astype(np.int64), valid[i].astype(bool))
        if table.size != n:
            raise CheckpointError("checkpoint keys contain duplicate states")
        table.values[:n] = values.astype(np.float64)
        self.table = table
        self.support = arrays["support"].astype(bool)
        self._episode = None

    def extra_state(self) -> dict[str, Any]:
        return {"exploration_horizon": self.exploration_horizon, "dropped_updates": self.dropped_updates}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        self.exploration_horizon = extra.get("exploration_horizon", self.config.exploration_steps)
        self.dropped_updates = int(extra.get("dropped_updates", 0))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train Q-learning on an env id, evaluate it on the test split and compare with a random agent."""
    from aligngym.agents.cli import agent_parser, train_and_compare

    parser = agent_parser(__doc__.splitlines()[0], "aligngym/Target-Token-v0", 40_000, torch_flags=False)
    parser.add_argument("--exploration", choices=EXPLORATION_MODES, default="epsilon_greedy")
    parser.add_argument("--learning-rate", type=float, default=1.0)
    parser.add_argument(
        "--initial-q", type=float, default=0.0, help="1.0 (optimistic) suits --exploration softmax"
    )
    args = parser.parse_args(argv)
    cfg = QLearningConfig(
        seed=args.seed,
        exploration=args.exploration,
        learning_rate=args.learning_rate,
        initial_q=args.initial_q,
        log_dir=args.log_dir,
    )
    return train_and_compare(QLearningAgent, cfg, args)


if __name__ == "__main__":
    main()
