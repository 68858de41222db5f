"""The OpenEnv side of an aligngym task: wire models, the per-session environment and the typed client.

:class:`AlignGymEnvironment` puts OpenEnv's typed protocol over a registered aligngym env: observation = the prompt
(text and token ids), action = a completion (text or token actions), reward = the task scorer. The app, its limits and
the multi-process server live in :mod:`aligngym.envs.serving_app` and :mod:`aligngym.envs.serving_workers`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

import gymnasium as gym
import numpy as np

try:
    from openenv.core.client_types import StepResult
    from openenv.core.env_client import EnvClient
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import Action, EnvironmentMetadata, Observation, State
    from pydantic import Field, StrictInt, StrictStr, model_validator
    from pydantic_core import PydanticCustomError
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aligngym.envs.serving needs the optional 'serve' extra (openenv-core, uvicorn): "
        "pip install 'aligngym[serve]'"
    ) from _err

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.envs.core import AlignmentEnv, TokenEnv
from aligngym.envs.scorers import ScorerError

#: longest completion text / action list one request may carry (a server guard, far above any task budget)
MAX_COMPLETION_CHARS = 100_000
MAX_ACTIONS = 4096
#: a text completion is tokenized only up to ``max_new_tokens * CHARS_PER_TOKEN_CAP`` characters (see
#: :meth:`AlignGymEnvironment.step`): the token budget bounds the work, not the request size
CHARS_PER_TOKEN_CAP = 32

_Index = Annotated[StrictInt, Field(ge=0)]


class ActionError(ValueError):
    """A request the env cannot carry out (bad prompt index, action out of range, episode over): HTTP 422."""


# -- wire models ----------------------------------------------------------------------------------------------------
class CompletionAction(Action):
    """One step: a completion as text (``completion``) or as action indices (``actions``), exactly one of them.

    ``actions`` are indices into the env's action space (token ids, or positions in ``action_vocab``).
    ``prompt_index`` / ``prompt`` / ``seed`` start a fresh episode first, which makes a plain HTTP ``/step``
    self-contained (every HTTP request gets a fresh env).
    """

    completion: StrictStr | None = Field(default=None, max_length=MAX_COMPLETION_CHARS)
    actions: list[StrictInt] | None = Field(default=None, max_length=MAX_ACTIONS)
    prompt_index: _Index | None = None
    prompt: StrictStr | None = Field(default=None, max_length=MAX_COMPLETION_CHARS)
    seed: _Index | None = None

    @model_validator(mode="after")
    def _one_completion(self) -> CompletionAction:
        # PydanticCustomError, not ValueError: openenv-core puts ``errors()`` into its JSON error response, and the
        # ValueError that pydantic keeps in an error's context cannot be serialized (it would turn a 422 into a 500)
        if (self.completion is None) == (self.actions is None):
            raise PydanticCustomError(
                "completion_or_actions",
                "give exactly one of 'completion' (text) or 'actions' (action indices)",
            )
        if self.prompt_index is not None and self.prompt is not None:
            raise PydanticCustomError("prompt_or_index", "give 'prompt_index' or 'prompt', not both")
        return self


class PromptObservation(Observation):
    """What the client sees: the prompt, the completion so far and, when ``done``, its score and components.

    ``reward`` and ``done`` are OpenEnv's own fields; ``metadata`` is not sent by openenv-core, so everything a client
    needs is a declared field here. When ``done`` and the served env has a gold scorer (the task's default, or the
    ``gold`` env option), ``gold_score`` and ``gold_components`` carry its judgement of the completion: reported for
    monitoring, never part of ``reward`` (``None`` / ``{}`` before the end and for envs served with ``gold=False``).
    """

    env_id: str = ""
    granularity: Literal["token", "sequence"] = "sequence"
    episode_id: str = ""
    prompt: str = ""
    prompt_index: int = -1
    prompt_ids: list[int] = Field(default_factory=list)
    completion: str = ""
    completion_ids: list[int] = Field(default_factory=list)
    score: float | None = None
    reward_components: dict[str, float] = Field(default_factory=dict)
    gold_score: float | None = None
    gold_components: dict[str, float] = Field(default_factory=dict)
    ref_logprob: float | None = None
    finish_reason: str | None = None
    num_actions: int = 0
    max_new_tokens: int = 0
    unused_actions: int = 0


class EpisodeState(State):
    """``state`` of a session: the episode so far (``episode_id`` and ``step_count`` come from OpenEnv's State)."""

    env_id: str = ""
    prompt: str = ""
    prompt_index: int = -1
    completion: str = ""
    done: bool = False
    score: float | None = None
    gold_score: float | None = None


# -- the environment ------------------------------------------------------------------------------------------------
class EnvTemplate:
    """One gym env built once per server; every session gets a cheap clone that shares its runtime.

    Plain HTTP ``/reset`` and ``/step`` build a fresh env per request on the event loop, so building a tokenizer and
    re-encoding the prompt set each time (~20 ms) is not an option. A clone shares the read-only
    :class:`~aligngym.envs.core.TaskRuntime` (tokenizer, prompt ids, scorer, reference model) and has its own
    episode state and its own random generator.

    Resets and steps of all sessions run on one small thread pool (:attr:`executor`), not one thread per session:
    scoring holds the GIL (VADER, regexes) or uses torch's own threads, so more threads only add switching, and
    4,096 sessions would otherwise mean 4,096 threads.

    :param env_id: a registered id, e.g. ``"aligngym/Sentiment-Sequence-v0"``.
    :param env_kwargs: options for ``gym.make`` (``max_new_tokens``, ``prompts``, ``scorer`` ...).
    :param env_threads: threads that run resets and steps for all sessions of this process.
    """

    def __init__(
        self, env_id: str, env_kwargs: Mapping[str, Any] | None = None, env_threads: int = 2
    ) -> None:
        if isinstance(env_threads, bool) or not isinstance(env_threads, int) or env_threads < 1:
            raise ValueError(f"env_threads must be a positive integer, got {env_threads!r}")
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.env_threads = env_threads
        self._executor: ThreadPoolExecutor | None = None
        base = gym.make(env_id, **self.env_kwargs).unwrapped
        if not isinstance(base, AlignmentEnv):
            raise TypeError(
                f"{env_id!r} is not an aligngym env (got {type(base).__name__}); serve an aligngym/... id"
            )
        # build the scorers and load their weights now, once, before sessions share them and before /health
        # says ready (a model-backed gold scorer otherwise loads on the first step: seconds)
        base.runtime.warm_up()
        self.base = base
        self.granularity: Literal["token", "sequence"] = "token" if isinstance(base, TokenEnv) else "sequence"
        spec = gym.spec(env_id)
        task = base.runtime.task
        self.description = f"{spec.id}: {task.description}"

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The shared pool that runs env work (created on first use, in the serving process)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.env_threads, thread_name_prefix="aligngym-env")
        return self._executor

    def shutdown(self, wait: bool = True) -> None:
        """Stop the pool after the steps it holds have finished (graceful shutdown)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait)
            self._executor = None

    def new_env(self) -> AlignmentEnv:
        env = object.__new__(type(self.base))
        env.__dict__.update(self.base.__dict__)
        env._np_random = None  # its own generator (seeded at reset)
        env._np_random_seed = None
        return env


class AlignGymEnvironment(Environment[CompletionAction, PromptObservation, EpisodeState]):
    """OpenEnv environment over one aligngym env.

    * ``reset(seed=None, episode_id=None, prompt_index=None, prompt=None)``: a new episode; the observation holds the
      prompt text and its token ids.
    * ``step(CompletionAction)``. Sequence ids: ``completion`` text is scored as given (cut at the task's stop
      strings, any tokenizer may have produced it), ``actions`` go through ``SequenceEnv.step`` exactly (padded with
      the EOS action when shorter than ``max_new_tokens``); ``done`` after one step. Token ids: ``actions`` (or the
      ``completion`` encoded with the env's tokenizer) are stepped one token at a time as a chunk; ``reward`` is the
      chunk's summed reward, ``done`` when the completion ends; actions past the end are counted in
      ``unused_actions``.
    * ``state``: :class:`EpisodeState`.

    Completion-length rule (both granularities): a ``completion`` text is cut to its first ``max_new_tokens`` tokens
    under the env's tokenizer (only its first ``max_new_tokens * CHARS_PER_TOKEN_CAP`` characters are tokenized), the
    same budget a generated completion has; a cut text reports ``finish_reason="length"``. So a 100,000-character
    completion costs what a budget-long one costs and is never scored whole. ``actions`` longer than the budget are
    refused (sequence) or left unused (token).
    """

    SUPPORTS_CONCURRENT_SESSIONS = True
    #: openenv-core then builds every session on one shared thread instead of one new thread per session; resets and
    #: steps run on :attr:`EnvTemplate.executor` (see :meth:`reset_async` / :meth:`step_async`)
    REQUIRES_SINGLE_THREAD_EXECUTOR = True

    def __init__(self, template: EnvTemplate) -> None:
        super().__init__()
        self._template = template
        self._env = template.new_env()
        self._started = False
        self._done = False
        self._episode_id = ""
        self._steps = 0
        self._completion = ""
        self._completion_ids: list[int] = []
        self._score: float | None = None
        self._gold: float | None = None
        self._prompt_ids: list[int] = []

    # -- protocol ----------------------------------------------------------------------------------------------------
    def reset(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        prompt_index: int | None = None,
        prompt: Any = None,
        **kwargs: Any,
    ) -> PromptObservation:
        if kwargs:
            raise ActionError(
                f"unknown reset option(s) {sorted(kwargs)}; expected seed, episode_id, prompt_index or prompt"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ActionError(f"seed must be a non-negative integer, got {seed!r}")
        if episode_id is not None and not isinstance(episode_id, str):
            raise ActionError(f"episode_id must be a string, got {type(episode_id).__name__}")
        options: dict[str, Any] = {}
        if prompt_index is not None:
            options["prompt_index"] = prompt_index
        if prompt is not None:
            options["prompt"] = prompt
        obs, _ = self._call_env(self._env.reset, seed=seed, options=options or None)
        rt = self._env.runtime
        head = slice(0, rt.max_prompt_tokens)
        self._prompt_ids = [int(t) for t in obs["input_ids"][head][obs["attention_mask"][head] == 1]]
        self._started, self._done, self._steps = True, False, 0
        self._episode_id = episode_id or uuid.uuid4().hex
        self._completion, self._completion_ids, self._score, self._gold = "", [], None, None
        return self._observation(reward=None)

    def step(
        self, action: CompletionAction, timeout_s: float | None = None, **kwargs: Any
    ) -> PromptObservation:
        if not isinstance(action, CompletionAction):
            raise ActionError(f"expected a CompletionAction, got {type(action).__name__}")
        if action.prompt_index is not None or action.prompt is not None or action.seed is not None:
            self.reset(seed=action.seed, prompt_index=action.prompt_index, prompt=action.prompt)
        elif not self._started:
            self.reset()  # a stateless request (plain HTTP /step): an episode on a prompt drawn at random
        elif self._done:
            raise ActionError(
                "the episode has ended (done=true); reset, or put prompt_index / seed in the action to start a new one"
            )
        self._steps += 1
        if self._template.granularity == "token":
            return self._step_tokens(action)
        return self._step_sequence(action)

    async def reset_async(
        self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any
    ) -> PromptObservation:
        """:meth:`reset` on the template's shared thread pool (openenv-core awaits this one when it exists)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._template.executor, lambda: self.reset(seed=seed, episode_id=episode_id, **kwargs)
        )

    async def step_async(
        self, action: CompletionAction, timeout_s: float | None = None, **kwargs: Any
    ) -> PromptObservation:
        """:meth:`step` on the template's shared thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._template.executor, lambda: self.step(action, timeout_s=timeout_s, **kwargs)
        )

    @property
    def state(self) -> EpisodeState:
        row = self._env._row if self._started else None
        return EpisodeState(
            episode_id=self._episode_id or None,
            step_count=self._steps,
            env_id=self._template.env_id,
            prompt=row["prompt"] if row else "",
            prompt_index=int(getattr(self._env, "_prompt_index", -1)) if row else -1,
            completion=self._completion,
            done=self._done,
            score=self._score,
            gold_score=self._gold,
        )

    def get_metadata(self) -> EnvironmentMetadata:
        return EnvironmentMetadata(
            name=self._template.env_id,
            description=self._template.description,
            version="v0",
            author="aligngym",
        )

    def close(self) -> None:
        self._env.close()

    # -- steps -------------------------------------------------------------------------------------------------------
    def _call_env(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the gym env; its input errors become :class:`ActionError` (HTTP 422), scorer faults stay as they are."""
        try:
            out = fn(*args, **kwargs)
        except ScorerError:
            raise
        except (ValueError, TypeError) as err:
            raise ActionError(str(err)) from err
        return out

    def _budget_cut(self, text: str) -> tuple[str, list[int], bool]:
        """``text`` cut to its first ``max_new_tokens`` tokens, their ids, and whether anything was cut.

        Only the first ``max_new_tokens * CHARS_PER_TOKEN_CAP`` characters are tokenized, so the cost is bounded by
        the task's budget whatever the request carries. The text is cut at the end offset of the last kept token, so
        the kept text is exactly a prefix of what was sent.
        """
        rt = self._env.runtime
        budget = rt.max_new_tokens
        head = text[: budget * CHARS_PER_TOKEN_CAP]
        enc = rt.tokenizer.backend.encode(head, add_special_tokens=False)
        ids = [int(t) for t in enc.ids]
        if len(ids) <= budget:
            return head, ids, len(head) < len(text)
        return head[: enc.offsets[budget - 1][1]], ids[:budget], True

    def _text_actions(self, text: str) -> list[int]:
        """Action indices of ``text`` under the env's tokenizer (token envs), at most ``max_new_tokens`` of them."""
        rt = self._env.runtime
        _, ids, _ = self._budget_cut(text)
        if not ids:
            raise ActionError("the completion encodes to no tokens; send at least one token")
        if rt.action_ids is None:
            return ids
        index = {int(t): i for i, t in enumerate(rt.action_ids)}
        missing = sorted({t for t in ids if t not in index})
        if missing:
            shown = [rt.tokenizer.id_to_token(t) for t in missing[:8]]
            raise ActionError(
                f"the completion has tokens outside this env's action_vocab: {shown} (ids {missing[:8]}); "
                f"allowed: {[rt.tokenizer.id_to_token(int(t)) for t in rt.action_ids[:32]]}"
            )
        return [index[t] for t in ids]

    def _eos_action(self) -> int | None:
        """Index of the EOS token in the action space, or None when it has none."""
        rt = self._env.runtime
        if rt.eos_id is None:
            return None
        if rt.action_ids is None:
            return int(rt.eos_id)
        hits = np.flatnonzero(rt.action_ids == rt.eos_id)
        return int(hits[0]) if hits.size else None

    def _step_tokens(self, action: CompletionAction) -> PromptObservation:
        actions = (
            action.actions if action.actions is not None else self._text_actions(action.completion or "")
        )
        if not actions:
            raise ActionError("'actions' is empty; a token-level step needs at least one action")
        total, info, used = 0.0, {}, 0
        for a in actions:
            _, r, terminated, _, info = self._call_env(self._env.step, a)
            total += float(r)
            used += 1
            if terminated:
                self._done = True
                break
        self._completion_ids = [int(t) for t in self._env._generated]
        if self._done:
            return self._finished(info, reward=total, unused=len(actions) - used)
        self._completion = self._env.runtime.tokenizer.decode(self._completion_ids)
        return self._observation(reward=total, ref_logprob=info.get("ref_logprob"))

    def _step_sequence(self, action: CompletionAction) -> PromptObservation:
        rt = self._env.runtime
        if action.actions is not None:
            acts = list(action.actions)
            if len(acts) > rt.max_new_tokens:
                raise ActionError(
                    f"'actions' has {len(acts)} entries; this env takes at most {rt.max_new_tokens}"
                )
            if len(acts) < rt.max_new_tokens:
                eos = self._eos_action()
                if eos is None:
                    raise ActionError(
                        f"'actions' has {len(acts)} entries but this env has no EOS action to pad with; send "
                        f"exactly max_new_tokens={rt.max_new_tokens}"
                    )
                acts += [eos] * (rt.max_new_tokens - len(acts))
            _, r, _, _, info = self._call_env(self._env.step, np.asarray(acts, dtype=np.int64))
            self._done = True
            self._completion_ids = [int(t) for t in info["completion_ids"]]
            return self._finished(info, reward=float(r), unused=0)
        # text level: score the text as given, cut at the token budget and at the task's stop strings
        row = self._env._row
        assert row is not None
        text, ids, cut = self._budget_cut(action.completion or "")
        finish = "length" if cut else "text"
        for s in rt.stop:
            k = text.find(s)
            if k >= 0:
                text, finish = text[:k], "stop"
                ids = rt.tokenizer.encode(text)
                break
        total, comps = rt.score([row], [text])
        gold = rt.gold([row], [text], proxy=(total, comps))
        self._done = True
        self._completion_ids = ids
        result: dict[str, Any] = {
            "completion": text,
            "score": float(total[0]),
            "reward_components": {k: float(v[0]) for k, v in comps.items()},
            "finish_reason": finish,
        }
        if gold is not None:  # as the gym env reports it: beside the reward, never in it
            result["gold_score"] = float(gold[0][0])
            result["gold_components"] = {k: float(v[0]) for k, v in gold[1].items()}
        return self._finished(result, reward=float(total[0]), unused=0)

    def _finished(self, info: Mapping[str, Any], *, reward: float, unused: int) -> PromptObservation:
        self._completion = str(info["completion"])
        self._score = float(info["score"])
        gold = info.get("gold_score")
        self._gold = None if gold is None else float(gold)
        return self._observation(
            reward=reward,
            score=self._score,
            components=dict(info["reward_components"]),
            gold_score=self._gold,
            gold_components=dict(info.get("gold_components") or {}),
            finish_reason=str(info["finish_reason"]),
            ref_logprob=info.get("ref_logprob"),
            unused=unused,
        )

    def _observation(
        self,
        *,
        reward: float | None,
        score: float | None = None,
        components: dict[str, float] | None = None,
        gold_score: float | None = None,
        gold_components: dict[str, float] | None = None,
        finish_reason: str | None = None,
        ref_logprob: float | None = None,
        unused: int = 0,
    ) -> PromptObservation:
        env, rt = self._env, self._env.runtime
        row = env._row or {"prompt": ""}
        return PromptObservation(
            done=self._done,
            reward=reward,
            env_id=self._template.env_id,
            granularity=self._template.granularity,
            episode_id=self._episode_id,
            prompt=row["prompt"],
            prompt_index=int(env._prompt_index),
            prompt_ids=self._prompt_ids,
            completion=self._completion,
            completion_ids=self._completion_ids,
            score=score,
            reward_components=components or {},
            gold_score=gold_score,
            gold_components=gold_components or {},
            ref_logprob=None if ref_logprob is None else float(ref_logprob),
            finish_reason=finish_reason,
            num_actions=rt.n_actions,
            max_new_tokens=rt.max_new_tokens,
            unused_actions=unused,
        )


class SessionLostError(ConnectionError):
    """The WebSocket session ended under the client: the server stopped, restarted or shut down, closed the session
    for being idle, or did not answer in time. The episode is gone; the next call opens a new session (reset first).
    """


class ServerRefusedError(ConnectionError):
    """The server refused to open a session, e.g. HTTP 503 at its session cap or while shutting down.

    :param message: what happened, with the server's own explanation.
    :param status_code: the HTTP status of the refusal.
    :param retry_after_s: the server's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(self, message: str, status_code: int, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class AlignGymClient(EnvClient[CompletionAction, PromptObservation, EpisodeState]):
    """Typed OpenEnv client (WebSocket session): ``AlignGymClient(base_url=url).sync()`` for blocking use.

    ``step`` takes a :class:`CompletionAction` or a plain dict of its fields. Faults are typed: a refused session
    raises :class:`ServerRefusedError` (with the HTTP status), a session lost mid-episode raises
    :class:`SessionLostError` and drops the dead connection, so the next ``reset`` reconnects by itself (to a
    restarted server, too). Errors the server reports for a request stay ``RuntimeError`` and keep the session.
    With ``retry_lost_steps`` a self-contained step (one that carries ``prompt_index``, ``prompt`` or ``seed``, so
    it needs no earlier state) whose session was lost is sent once more on a new session: scoring it twice is
    harmless. Other arguments are OpenEnv's ``EnvClient`` ones (``base_url``, ``connect_timeout_s``,
    ``message_timeout_s`` ...).
    """

    def __init__(self, *args: Any, retry_lost_steps: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_lost_steps = retry_lost_steps

    async def step(self, action: Any, **kwargs: Any) -> StepResult[PromptObservation]:
        try:
            return await super().step(action, **kwargs)
        except SessionLostError:
            fields = action.model_dump() if isinstance(action, CompletionAction) else dict(action)
            if not self.retry_lost_steps or all(
                fields.get(k) is None for k in ("prompt_index", "prompt", "seed")
            ):
                raise
            return await super().step(action, **kwargs)

    async def connect(self) -> AlignGymClient:
        from websockets.exceptions import InvalidStatus

        try:
            await super().connect()
        except ConnectionError as err:
            cause = err.__cause__
            if not isinstance(cause, InvalidStatus):
                raise
            response = cause.response
            try:
                detail = str(json.loads(bytes(response.body).decode("utf-8"))["detail"])
            except (ValueError, KeyError, TypeError):
                detail = bytes(response.body).decode("utf-8", "replace")[:500] or response.reason_phrase
            retry = response.headers.get("Retry-After")
            raise ServerRefusedError(
                f"{self._ws_url} refused the session (HTTP {response.status_code}): {detail}",
                status_code=response.status_code,
                retry_after_s=float(retry) if retry and retry.replace(".", "", 1).isdigit() else None,
            ) from cause
        return self

    async def _send_and_receive(self, message: dict[str, Any]) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        if (
            getattr(self, "_ws", None) is None
        ):  # connecting: its errors (refused, nothing listening) pass as is
            await self.connect()
        try:
            return await super()._send_and_receive(message)
        except (ConnectionClosed, OSError) as err:  # OSError covers TimeoutError and reset sockets
            ws: Any = getattr(self, "_ws", None)
            self._ws = None
            if ws is not None:
                ws.transport.abort()
            how = (
                f"no answer within {self._message_timeout} s"
                if isinstance(err, TimeoutError)
                else f"{type(err).__name__}: {err}"
            )
            raise SessionLostError(
                f"the session with {self._ws_url} was lost ({how}); the server may have stopped, restarted or "
                "closed an idle session. Its episode is gone: call reset() to start a new session."
            ) from err

    def _step_payload(self, action: CompletionAction | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(action, CompletionAction):
            return action.model_dump(exclude_none=True, exclude={"metadata"})
        return dict(action)

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[PromptObservation]:
        obs = PromptObservation(
            **payload.get("observation", {}), reward=payload.get("reward"), done=payload.get("done", False)
        )
        return StepResult(
            observation=obs, reward=payload.get("reward"), done=bool(payload.get("done", False))
        )

    def _parse_state(self, payload: dict[str, Any]) -> EpisodeState:
        return EpisodeState(**payload)
