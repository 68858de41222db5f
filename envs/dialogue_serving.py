"""A dialogue task as an OpenEnv environment: one session = one conversation, one ``step`` = one assistant turn.

:class:`DialogueEnvironment` serves any ``aligngym/Dialogue-*`` / ``aligngym/Guess-*`` id over OpenEnv's typed protocol
(optional ``serve`` extra). Multi-turn sessions live on the ``/ws`` WebSocket (openenv-core 0.3 builds a fresh env for
every plain HTTP ``/step``, so over HTTP an episode is one turn long). :func:`dialogue_app` builds the FastAPI app.
"""

from __future__ import annotations

import uuid
from typing import Any

import gymnasium as gym

try:
    from openenv.core.env_server.http_server import create_app
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import Action, Observation, State
    from pydantic import Field, StrictInt, StrictStr, model_validator
    from pydantic_core import PydanticCustomError
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aligngym.envs.dialogue_serving needs the optional 'serve' extra (openenv-core, uvicorn): "
        "pip install 'aligngym[serve]'"
    ) from _err

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.envs.dialogue import DialogueEnv, DialogueTokenEnv

MAX_TURN_CHARS = 20_000


class TurnAction(Action):
    """One assistant turn: ``text`` (encoded once with the env's tokenizer) or ``actions`` (action indices, exact).

    ``prompt_index`` / ``seed`` start a new conversation first (what a self-contained HTTP ``/step`` needs).
    """

    text: StrictStr | None = Field(default=None, max_length=MAX_TURN_CHARS)
    actions: list[StrictInt] | None = Field(default=None, max_length=4096)
    prompt_index: StrictInt | None = None
    seed: StrictInt | None = None

    @model_validator(mode="after")
    def _one_turn(self) -> TurnAction:
        if (self.text is None) == (self.actions is None):
            raise PydanticCustomError("text_or_actions", "give exactly one of 'text' or 'actions'")
        return self


class ConversationObservation(Observation):
    """The conversation so far: its transcript, the exact token history, the last turn's score, and at the end the
    episode ``score`` and ``finish_reason`` (``reward`` and ``done`` are OpenEnv's own fields)."""

    env_id: str = ""
    episode_id: str = ""
    turn: int = 0
    transcript: list[dict[str, Any]] = Field(default_factory=list)
    history_ids: list[int] = Field(default_factory=list)
    user_message: str = ""
    turn_score: float | None = None
    score: float | None = None
    finish_reason: str | None = None
    num_actions: int = 0
    max_turn_tokens: int = 0
    unused_actions: int = 0


class ConversationState(State):
    """``state`` of a session (``episode_id`` and ``step_count`` come from OpenEnv's State)."""

    env_id: str = ""
    turn: int = 0
    done: bool = False
    score: float | None = None


class DialogueEnvironment(Environment[TurnAction, ConversationObservation, ConversationState]):
    """OpenEnv environment over one dialogue env; every session holds its own conversation.

    A turn given as ``actions`` goes to the env exactly: a ``-Sequence`` env gets them padded with the end-of-turn
    action (when it is in the action vocabulary); a ``-Token`` env steps them one by one until the turn ends (the
    rest are counted in ``unused_actions``). A ``text`` turn is encoded once, cut to ``max_turn_tokens`` tokens, and
    then handled as ``actions`` (with a restricted ``action_vocab`` every token must be one of its entries).

    :param env_id: a registered dialogue id.
    :param env_kwargs: options for ``gym.make``.
    """

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(
        self, env_id: str = "aligngym/Dialogue-Sequence-v0", env_kwargs: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        env = gym.make(env_id, **(env_kwargs or {})).unwrapped
        if not isinstance(env, DialogueEnv):
            raise TypeError(
                f"{env_id} is not a dialogue env (got {type(env).__name__}); use aligngym.envs.serving"
            )
        self._env, self._env_id = env, env_id
        self._episode_id, self._steps, self._done, self._started = "", 0, False, False
        self._score: float | None = None

    # -- protocol ----------------------------------------------------------------------------------------------------
    def reset(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        prompt_index: int | None = None,
        **kwargs: Any,
    ) -> ConversationObservation:
        if kwargs:
            raise ValueError(
                f"unknown reset option(s) {sorted(kwargs)}; expected seed, episode_id or prompt_index"
            )
        options = {"prompt_index": prompt_index} if prompt_index is not None else None
        obs, _ = self._env.reset(seed=seed, options=options)
        self._episode_id = episode_id or uuid.uuid4().hex
        self._steps, self._done, self._started, self._score = 0, False, True, None
        return self._observation(obs, reward=None, info={})

    def step(
        self, action: TurnAction, timeout_s: float | None = None, **kwargs: Any
    ) -> ConversationObservation:
        del timeout_s, kwargs
        if action.prompt_index is not None or action.seed is not None:
            self.reset(seed=action.seed, prompt_index=action.prompt_index)
        if not self._started:
            raise ValueError("call reset() before step(), or put prompt_index / seed in the action")
        if self._done:
            raise ValueError("the episode has ended; reset() or put prompt_index / seed in the action")
        rt = self._env.runtime
        acts = list(action.actions) if action.actions is not None else self._text_actions(action.text or "")
        if not acts:
            raise ValueError("a turn needs at least one token")
        if any(not 0 <= a < rt.n_actions for a in acts):
            raise ValueError(f"actions must be in [0, {rt.n_actions}), got {acts}")
        unused = 0
        if isinstance(self._env, DialogueTokenEnv):
            reward = 0.0
            for k, a in enumerate(acts):
                obs, r, done, _, info = self._env.step(a)
                reward += float(r)
                if "turn_score" in info:
                    unused = len(acts) - k - 1
                    break
            else:
                raise ValueError(
                    f"the turn did not end after {len(acts)} actions; end it with the end-of-turn token"
                )
        else:
            if len(acts) > rt.max_turn_tokens:
                raise ValueError(
                    f"a turn takes at most max_turn_tokens={rt.max_turn_tokens} actions, got {len(acts)}"
                )
            acts += [self._eos_action()] * (rt.max_turn_tokens - len(acts))
            obs, reward, done, _, info = self._env.step(acts)
        self._steps += 1
        self._done = bool(done)
        if done:
            self._score = float(info["score"])
        out = self._observation(obs, reward=float(reward), info=info)
        out.unused_actions = unused
        return out

    @property
    def state(self) -> ConversationState:
        return ConversationState(
            episode_id=self._episode_id,
            step_count=self._steps,
            env_id=self._env_id,
            turn=self._env._turn,
            done=self._done,
            score=self._score,
        )

    # -- helpers -----------------------------------------------------------------------------------------------------
    def _eos_action(self) -> int:
        rt = self._env.runtime
        if rt.eos_id is None:
            raise ValueError("this tokenizer has no end-of-turn token: give exactly max_turn_tokens actions")
        if rt.action_ids is None:
            return int(rt.eos_id)
        hits = [i for i, t in enumerate(rt.action_ids.tolist()) if t == rt.eos_id]
        if not hits:
            raise ValueError(
                f"the action vocabulary has no end-of-turn token: give exactly max_turn_tokens={rt.max_turn_tokens} actions"
            )
        return hits[0]

    def _text_actions(self, text: str) -> list[int]:
        rt = self._env.runtime
        ids = list(rt.tokenizer.encode(text[: rt.max_turn_tokens * 32]))[: rt.max_turn_tokens]
        if rt.eos_id is not None and len(ids) < rt.max_turn_tokens:
            ids.append(int(rt.eos_id))
        if rt.action_ids is None:
            return ids
        index = {t: i for i, t in enumerate(rt.action_ids.tolist())}
        missing = [t for t in ids if t not in index and t != rt.eos_id]
        if missing:
            raise ValueError(
                f"text tokens {missing} are not in this env's action vocabulary; send 'actions' instead"
            )
        return [index[t] for t in ids if t in index]

    def _observation(self, obs: Any, reward: float | None, info: dict[str, Any]) -> ConversationObservation:
        env, rt = self._env, self._env.runtime
        n = int(obs["attention_mask"].sum())
        transcript = [{"role": t["role"], "text": t["text"], "ids": list(t["ids"])} for t in env._transcript]
        return ConversationObservation(
            done=self._done,
            reward=reward,
            env_id=self._env_id,
            episode_id=self._episode_id,
            turn=env._turn,
            transcript=transcript,
            history_ids=[int(t) for t in obs["input_ids"][:n]],
            user_message=transcript[-1]["text"] if transcript and transcript[-1]["role"] == "user" else "",
            turn_score=info.get("turn_score"),
            score=info.get("score"),
            finish_reason=info.get("finish_reason"),
            num_actions=int(rt.n_actions),
            max_turn_tokens=int(rt.max_turn_tokens),
        )


def dialogue_app(
    env_id: str = "aligngym/Dialogue-Sequence-v0",
    env_kwargs: dict[str, Any] | None = None,
    max_concurrent_envs: int = 64,
) -> Any:
    """The FastAPI app serving ``env_id`` (``uvicorn.run(dialogue_app(...))``); conversations live on ``/ws``."""
    DialogueEnvironment(env_id, env_kwargs)  # fail early on a bad id or options

    def factory() -> DialogueEnvironment:
        return DialogueEnvironment(env_id, env_kwargs)

    return create_app(
        factory, TurnAction, ConversationObservation, env_name=env_id, max_concurrent_envs=max_concurrent_envs
    )


__all__ = [
    "ConversationObservation",
    "ConversationState",
    "DialogueEnvironment",
    "TurnAction",
    "dialogue_app",
]
