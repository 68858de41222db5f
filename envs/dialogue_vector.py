"""Native vector env of the dialogue tasks: N conversations, each at its own turn, turn scorer called once per step.

:class:`DialogueVectorEnv` is the ``vector_entry_point`` of ``aligngym/Dialogue-*`` and ``aligngym/Guess-*``. Rows are
ordinary :class:`~aligngym.envs.dialogue.DialogueEnv` instances (each with its own simulator state); what is batched is
the turn scorer: every step, the rows whose turn ends are scored in one call.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from aligngym.envs.dialogue import DialogueSequenceEnv, DialogueTokenEnv
from aligngym.envs.scorers import ScorerError
from aligngym.envs.simulators import LMSimulator

AUTORESET_MODES = {
    m.value: m for m in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED)
}


class DialogueVectorEnv(VectorEnv):
    """N dialogue envs stepped together; rows may be at different turns.

    ## Description
    ``gym.make_vec("aligngym/Guess-Token-v0", num_envs=16)``. Row i behaves as the single env (token or sequence
    granularity, from ``kind``) seeded with ``seed + i``, so trajectories, rewards and infos match a
    ``SyncVectorEnv`` of single envs; the turn scorer (e.g. the preference reward model) is called once per step for
    all rows whose turn ends.

    ## Action Space
    ``MultiDiscrete([k] * N)`` for token rows, ``MultiDiscrete`` (N, max_turn_tokens) for sequence rows.

    ## Observation Space
    The single env's Dict stacked: ``input_ids`` / ``attention_mask`` int64 (N, L).

    ## Rewards
    As the single env, float64 (N,).

    ## Starting State
    Each row draws its opening with its own generator.

    ## Episode End
    ``autoreset_mode`` ``"NextStep"`` (Gymnasium's default: the step after a row ends resets it and ignores its
    action), ``"SameStep"`` (reset at once; the final observation and info in ``final_obs`` / ``final_info``) or
    ``"Disabled"`` (``reset(options={"reset_mask": mask})`` resets rows).

    ## Arguments
    ``num_envs``, ``kind`` (``"Token"`` / ``"Sequence"``), ``autoreset_mode`` and every single-env option.

    ## Version History
    * v0: initial release.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        kind: str = "Token",
        autoreset_mode: Any = AutoresetMode.NEXT_STEP,
        **options: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs <= 0:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if kind not in ("Token", "Sequence"):
            raise ValueError(f"kind must be 'Token' or 'Sequence', got {kind!r}")
        mode = getattr(autoreset_mode, "value", autoreset_mode)
        if mode not in AUTORESET_MODES:
            raise ValueError(
                f"autoreset_mode must be one of {sorted(AUTORESET_MODES)}, got {autoreset_mode!r}"
            )
        self.autoreset_mode = AUTORESET_MODES[mode]
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        options.pop("scorer_batch_size", None)
        cls = DialogueTokenEnv if kind == "Token" else DialogueSequenceEnv
        # a user simulator object keeps per-conversation state (a secret, an outcome): each row gets its own copy
        sim = options.get("simulator")
        self.envs: list[DialogueTokenEnv | DialogueSequenceEnv] = [
            cls(
                **{**options, "simulator": copy.deepcopy(sim)}
                if sim is not None and not isinstance(sim, str)
                else options
            )
            for _ in range(num_envs)
        ]
        self.num_envs = num_envs
        self.runtime = self.envs[0].runtime
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        sims = [env.runtime.simulator for env in self.envs]
        #: every row's user is an LM: one model serves all rows and replies are sampled in one batch per step
        self._lm_batch = all(isinstance(s, LMSimulator) for s in sims)
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._obs: list[dict[str, np.ndarray]] = []

    def _stack(self, obs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: np.stack([o[k] for o in obs]) for k in ("input_ids", "attention_mask")}

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset every row (or the rows of ``options["reset_mask"]``); row i is seeded with ``seed + i``."""
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"reset_mask must be bool ({self.num_envs},), got shape {mask.shape}")
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed list must have {self.num_envs} entries, got {len(seeds)}")
        infos: dict[str, Any] = {}
        if not self._obs:
            self._obs = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(mask):
            self._obs[i], info = self.envs[i].reset(seed=seeds[i], options=options or None)
            infos = self._add_info(infos, info, int(i))
            self._needs_reset[i] = False
        return self._stack(self._obs), infos

    def _score_batch(self, requests: dict[int, tuple[str, str]]) -> dict[int, tuple[float, dict[str, float]]]:
        """One turn-scorer call for every row whose turn just ended."""
        if not requests:
            return {}
        rows = sorted(requests)
        scorer = self.envs[rows[0]].runtime.scorer("turn")
        assert scorer is not None
        ctx_rows = [self.envs[i]._row or {} for i in rows]
        keys = sorted({k for r in ctx_rows for k in r} - {"prompt", "split"})
        context = {k: [r.get(k) for r in ctx_rows] for k in keys}
        try:
            total, comps = scorer.score_with_components(
                [requests[i][0] for i in rows], [requests[i][1] for i in rows], **context
            )
        except ScorerError:
            raise
        except Exception as err:
            raise ScorerError(f"scorer {scorer.name!r} raised {type(err).__name__}: {err}") from err
        return {i: (float(total[k]), {n: float(v[k]) for n, v in comps.items()}) for k, i in enumerate(rows)}

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"actions must have {self.num_envs} rows, got shape {actions.shape}")
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        results: dict[int, Any] = {}
        requests: dict[int, tuple[str, str]] = {}
        ended_turn: list[int] = []
        for i, env in enumerate(self.envs):
            if self._needs_reset[i]:  # NEXT_STEP: this step resets the row and ignores its action
                self._obs[i], results[i] = env.reset()
                self._needs_reset[i] = False
                continue
            env._check_running()
            if env._apply(actions[i]):
                ended_turn.append(i)
                request = env._close_turn()
                if request is not None:
                    requests[i] = request
            else:
                results[i] = None
        scored = self._score_batch(requests)
        replies: dict[int, list[int]] = {}
        if self._lm_batch and ended_turn:
            first = self.envs[0].runtime.simulator
            for env in self.envs[1:]:  # share the first row's model (loaded once)
                env.runtime.simulator._model = first.model
            histories = [self.envs[i]._history for i in ended_turn]
            batch = first.reply_batch(histories, [self.envs[i].np_random for i in ended_turn])
            replies = dict(zip(ended_turn, batch))
        for i in ended_turn:
            results[i] = self.envs[i]._after_turn(scored.get(i), replies.get(i))
        for i, env in enumerate(self.envs):
            turn = results[i]
            if isinstance(turn, dict):  # the info of an autoreset row
                infos = self._add_info(infos, turn, i)
                continue
            obs, reward, term, _, info = env._step_result(turn)
            rewards[i], terminated[i] = float(reward), term
            if term and self.autoreset_mode == AutoresetMode.SAME_STEP:
                final = {"final_obs": obs, "final_info": info}
                obs, info = env.reset()
                info = {**info, **final}
            elif term and self.autoreset_mode == AutoresetMode.NEXT_STEP:
                self._needs_reset[i] = True
            self._obs[i] = obs
            infos = self._add_info(infos, info, i)
        return self._stack(self._obs), rewards, terminated, truncated, infos

    def action_masks(self) -> np.ndarray:
        """Valid actions of every row, bool (N, k)."""
        return np.stack([env.action_masks() for env in self.envs])

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


class DialogueTokenVectorEnv(DialogueVectorEnv):
    """:class:`DialogueVectorEnv` of token-level rows (the ``vector_entry_point`` of ``aligngym/*-Token-v0`` dialogue ids)."""

    def __init__(
        self, num_envs: int = 1, autoreset_mode: Any = AutoresetMode.NEXT_STEP, **options: Any
    ) -> None:
        super().__init__(num_envs, "Token", autoreset_mode, **options)


class DialogueSequenceVectorEnv(DialogueVectorEnv):
    """:class:`DialogueVectorEnv` of turn-level rows (the ``vector_entry_point`` of ``-Sequence-v0`` dialogue ids)."""

    def __init__(
        self, num_envs: int = 1, autoreset_mode: Any = AutoresetMode.NEXT_STEP, **options: Any
    ) -> None:
        super().__init__(num_envs, "Sequence", autoreset_mode, **options)


__all__ = ["DialogueSequenceVectorEnv", "DialogueTokenVectorEnv", "DialogueVectorEnv"]
