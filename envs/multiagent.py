"""Multi-agent text games on PettingZoo: a speaker-listener referential game and a writer-critic loop.

Each game is a turn-based state machine (:class:`TextGame`) over token ids; :class:`TextAECEnv` and
:class:`TextParallelEnv` expose it through PettingZoo's AEC and Parallel APIs. Every agent sees the aligngym Dict
observation (``input_ids`` / ``attention_mask``); spoken ids are appended as sampled, never re-encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv, ParallelEnv

from aligngym.envs.scorers import BaseScorer, make_scorer
from aligngym.envs.tasks import data_path, read_jsonl
from aligngym.envs.tokenization import TextTokenizer, load_tokenizer

COLOURS = (" red", " green", " blue", " yellow")
ANIMALS = (" cat", " dog", " fish", " bird")


class TextGame:
    """A turn-based game between named agents over token ids (one agent holds the floor at a time).

    Subclasses set ``possible_agents`` and ``action_spaces`` and implement ``reset``, ``current``, ``visible_ids``,
    ``act`` and ``transcript``. The observation of every agent is ``Dict(input_ids, attention_mask)`` of length
    ``obs_len``: the agent's visible ids from position 0, then padding (the oldest ids are dropped if they overflow).
    """

    possible_agents: tuple[str, ...] = ()

    def __init__(self, tokenizer: Any = None, obs_len: int = 64) -> None:
        if isinstance(obs_len, bool) or not isinstance(obs_len, int) or obs_len <= 0:
            raise ValueError(f"obs_len must be a positive integer, got {obs_len!r}")
        self.tokenizer: TextTokenizer = load_tokenizer(tokenizer)
        self.vocab_size = self.tokenizer.vocab_size
        self.obs_len = obs_len
        self.observation_space = spaces.Dict(
            {
                "input_ids": spaces.Box(0, self.vocab_size - 1, shape=(obs_len,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, shape=(obs_len,), dtype=np.int64),
            }
        )
        self.action_spaces: dict[str, spaces.Discrete] = {}

    def _action_ids(self, vocab: Sequence[str | int] | None) -> np.ndarray | None:
        if vocab is None:
            return None
        ids = [self.tokenizer.single_token_id(v) if isinstance(v, str) else int(v) for v in vocab]
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i < self.vocab_size for i in ids):
            raise ValueError(f"a vocabulary must be distinct token ids in [0, {self.vocab_size}), got {ids}")
        return np.asarray(ids, dtype=np.int64)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        visible = self.visible_ids(agent)[-self.obs_len :]
        ids = np.full(self.obs_len, self.tokenizer.pad_id, dtype=np.int64)
        mask = np.zeros(self.obs_len, dtype=np.int64)
        ids[: len(visible)] = visible
        mask[: len(visible)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def check_action(self, agent: str, action: Any) -> int:
        space = self.action_spaces[agent]
        if isinstance(action, np.ndarray) and action.size == 1:
            action = action.reshape(()).item()
        if isinstance(action, bool | np.bool_) or not isinstance(action, int | np.integer):
            raise TypeError(f"{agent}'s action must be an integer in [0, {space.n}), got {action!r}")
        if not 0 <= int(action) < space.n:
            raise ValueError(f"{agent}'s action {int(action)} out of range for Discrete({space.n})")
        return int(action)

    # -- the game --------------------------------------------------------------------------------------------------
    def reset(self, rng: np.random.Generator, options: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def current(self) -> str:
        """The agent whose action the next step applies."""
        raise NotImplementedError

    def visible_ids(self, agent: str) -> list[int]:
        raise NotImplementedError

    def act(self, action: int) -> tuple[dict[str, float], bool]:
        """Apply the current agent's action; returns each agent's reward for this step and whether the game ended."""
        raise NotImplementedError

    def transcript(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def end_info(self) -> dict[str, Any]:
        return {}


class ReferentialGame(TextGame):
    """Speaker-listener referential game (Lewis signalling game in words).

    ``speaker_0`` sees ``"Target: <object>. Others: <distractors>. Say:"`` and speaks ``message_len`` tokens from
    its vocabulary (one token per step); ``listener_0`` sees the candidates in a shuffled order and the message
    (``"Heard:" + message ids + ". Choices: 1 <a>, 2 <b>, ..."``: the message first, so a
    left-to-right reader holds it while it reads the choices) and picks a candidate index. Both get 1.0 when the pick
    is the target, else 0.0 (shared reward). Objects are colour + animal phrases.

    :param n_candidates: K, the target plus K-1 distinct distractors (random pick: 1/K).
    :param message_len: tokens the speaker says.
    :param vocab: the speaker's words (one token each); default the 4 colours and 4 animals.
    :param colours: / :param animals: the words objects are made of (any text).
    """

    possible_agents = ("speaker_0", "listener_0")

    def __init__(
        self,
        n_candidates: int = 3,
        message_len: int = 2,
        vocab: Sequence[str | int] | None = COLOURS + ANIMALS,
        colours: Sequence[str] = COLOURS,
        animals: Sequence[str] = ANIMALS,
        tokenizer: Any = None,
        obs_len: int = 48,
    ) -> None:
        super().__init__(tokenizer, obs_len)
        self.objects = [f"{c}{a}" for c in colours for a in animals]
        if not 2 <= n_candidates <= len(self.objects):
            raise ValueError(f"n_candidates must be in [2, {len(self.objects)}], got {n_candidates}")
        if message_len <= 0:
            raise ValueError(f"message_len must be positive, got {message_len}")
        self.n_candidates, self.message_len = int(n_candidates), int(message_len)
        ids = self._action_ids(vocab)
        self.speaker_ids = ids if ids is not None else np.arange(self.vocab_size)
        self.action_spaces = {
            "speaker_0": spaces.Discrete(len(self.speaker_ids)),
            "listener_0": spaces.Discrete(self.n_candidates),
        }

    def reset(self, rng: np.random.Generator, options: dict[str, Any] | None = None) -> None:
        pick = rng.choice(len(self.objects), size=self.n_candidates, replace=False)
        self.target = self.objects[int(pick[0])]
        self.distractors = [self.objects[int(i)] for i in pick[1:]]
        self.order = [int(i) for i in rng.permutation(self.n_candidates)]  # listener's slot -> candidate
        candidates = [self.target, *self.distractors]
        self.choices = [candidates[i] for i in self.order]
        self.target_slot = self.order.index(0)
        self.speaker_prefix = self.encode(f"Target:{self.target}. Others:{','.join(self.distractors)}. Say:")
        listing = ",".join(f" {k + 1}{c}" for k, c in enumerate(self.choices))
        self.listener_head = self.encode("Heard:")
        self.listener_tail = self.encode(f". Choices:{listing}.")
        self.message: list[int] = []
        self.pick: int | None = None

    def current(self) -> str:
        return "speaker_0" if len(self.message) < self.message_len else "listener_0"

    def visible_ids(self, agent: str) -> list[int]:
        if agent == "speaker_0":
            return self.speaker_prefix + self.message
        return self.listener_head + self.message + self.listener_tail

    def act(self, action: int) -> tuple[dict[str, float], bool]:
        agent = self.current()
        a = self.check_action(agent, action)
        if agent == "speaker_0":
            self.message.append(int(self.speaker_ids[a]))
            return {}, False
        self.pick = a
        r = 1.0 if a == self.target_slot else 0.0
        return {"speaker_0": r, "listener_0": r}, True

    def transcript(self) -> list[dict[str, Any]]:
        out = [{"role": "speaker_0", "text": self.tokenizer.decode(self.message), "ids": tuple(self.message)}]
        if self.pick is not None:
            out.append({"role": "listener_0", "text": self.choices[self.pick].strip(), "ids": ()})
        return out

    def end_info(self) -> dict[str, Any]:
        return {"target": self.target.strip(), "success": self.pick == self.target_slot}


class WriterCriticGame(TextGame):
    """Writer-critic loop: ``writer_0`` drafts, ``critic_0`` comments, the writer drafts again, for ``rounds``.

    Both see the same history ``"Prompt: <prompt>\\nWriter:" + draft + "\\nCritic:" + critique + "\\nWriter:" ...``
    (the critic's ids enter the writer's next observation as sampled). A turn ends at EOS or its token budget. The
    writer is paid the scorer's score of each draft at its end; the critic is paid the change in score from one
    draft to the next (at the end of the next draft). Prompts: the Sentiment task's openings by default.

    :param scorer: scorer spec of a draft (``scorer(prompt, draft)``), default ``"sentiment"``.
    :param rounds: writer drafts per episode (critiques: ``rounds - 1``).
    :param writer_tokens: / :param critic_tokens: token budget of a draft / a critique.
    :param writer_vocab: / :param critic_vocab: restricted vocabularies (one token each) or ``None`` (all ids).
    :param prompts: opening texts; default the Sentiment prompts of ``split``.
    """

    possible_agents = ("writer_0", "critic_0")

    def __init__(
        self,
        scorer: Any = "sentiment",
        rounds: int = 2,
        writer_tokens: int = 12,
        critic_tokens: int = 8,
        writer_vocab: Sequence[str | int] | None = None,
        critic_vocab: Sequence[str | int] | None = None,
        prompts: Sequence[str] | None = None,
        split: str = "train",
        tokenizer: Any = None,
        obs_len: int = 96,
        device: str = "auto",
    ) -> None:
        super().__init__(tokenizer, obs_len)
        for name, v in (
            ("rounds", rounds),
            ("writer_tokens", writer_tokens),
            ("critic_tokens", critic_tokens),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.rounds, self.writer_tokens, self.critic_tokens = rounds, writer_tokens, critic_tokens
        if prompts is None:
            rows = read_jsonl(data_path("sentiment.jsonl"))
            prompts = [r["prompt"] for r in rows if r.get("split", split) == split or split == "all"]
        self.prompts = [str(p) for p in prompts]
        if not self.prompts:
            raise ValueError("WriterCriticGame needs at least one prompt")
        self.vocab_ids = {
            "writer_0": self._action_ids(writer_vocab),
            "critic_0": self._action_ids(critic_vocab),
        }
        self.action_spaces = {
            a: spaces.Discrete(len(ids) if ids is not None else self.vocab_size)
            for a, ids in self.vocab_ids.items()
        }
        self.scorer_spec, self.device = scorer, device
        self._scorer: BaseScorer | None = None
        self.writer_sep, self.critic_sep = self.encode("\nWriter:"), self.encode("\nCritic:")

    @property
    def scorer(self) -> BaseScorer:
        if self._scorer is None:
            self._scorer = make_scorer(self.scorer_spec, device=self.device)
        return self._scorer

    def reset(self, rng: np.random.Generator, options: dict[str, Any] | None = None) -> None:
        options = options or {}
        index = int(options.get("prompt_index", rng.integers(len(self.prompts))))
        self.prompt = self.prompts[index]
        self.history = self.encode(f"Prompt: {self.prompt}") + self.writer_sep
        self.turns: list[dict[str, Any]] = []
        self.turn_ids: list[int] = []
        self.speaker = "writer_0"
        self.scores: list[float] = []

    def current(self) -> str:
        return self.speaker

    def visible_ids(self, agent: str) -> list[int]:
        del agent  # both see the shared history
        return self.history + self.turn_ids

    def act(self, action: int) -> tuple[dict[str, float], bool]:
        agent = self.speaker
        a = self.check_action(agent, action)
        ids = self.vocab_ids[agent]
        tok = int(ids[a]) if ids is not None else a
        self.turn_ids.append(tok)
        budget = self.writer_tokens if agent == "writer_0" else self.critic_tokens
        eos = self.tokenizer.eos_id
        if tok != eos and len(self.turn_ids) < budget:
            return {}, False
        turn = self.turn_ids
        text = self.tokenizer.decode(turn[:-1] if turn[-1] == eos else turn)
        self.turns.append({"role": agent, "text": text, "ids": tuple(turn)})
        self.history, self.turn_ids = self.history + turn, []
        rewards: dict[str, float] = {}
        if agent == "writer_0":
            total, _ = self.scorer.score_with_components([self.prompt], [text])
            score = float(total[0])
            rewards["writer_0"] = score
            if self.scores:
                rewards["critic_0"] = score - self.scores[-1]
            self.scores.append(score)
            if len(self.scores) >= self.rounds:
                return rewards, True
            self.history += self.critic_sep
            self.speaker = "critic_0"
        else:
            self.history += self.writer_sep
            self.speaker = "writer_0"
        return rewards, False

    def transcript(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self.turns]

    def end_info(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "scores": tuple(self.scores)}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(self.scorer_spec, str | dict):
            state["_scorer"] = None
        return state


GAMES: dict[str, type[TextGame]] = {"referential": ReferentialGame, "writer_critic": WriterCriticGame}


def make_game(game: str | TextGame, **kwargs: Any) -> TextGame:
    if isinstance(game, TextGame):
        return game
    if game not in GAMES:
        raise ValueError(f"unknown game {game!r}; games: {sorted(GAMES)}")
    return GAMES[game](**kwargs)


class TextAECEnv(AECEnv):
    """PettingZoo AEC env over a :class:`TextGame`: ``agent_selection`` is the agent holding the floor.

    Rewards are dealt to every agent at the step that earns them (``last()`` returns the reward accumulated since
    the agent last acted). When the game ends every agent is terminated and ``infos`` carry ``transcript`` and the
    game's end info; each then steps ``None`` once, as PettingZoo requires. ``infos[agent]["action_mask"]`` is all
    ones (every action is legal when an agent holds the floor).
    """

    metadata: dict[str, Any] = {
        "render_modes": ["ansi"],
        "name": "aligngym_text_aec_v0",
        "is_parallelizable": False,
    }

    def __init__(
        self, game: str | TextGame = "referential", render_mode: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__()
        self.game = make_game(game, **kwargs)
        self.possible_agents = list(self.game.possible_agents)
        self.render_mode = render_mode
        self._rng: np.random.Generator | None = None

    def observation_space(self, agent: str) -> gym.Space:
        return self.game.observation_space

    def action_space(self, agent: str) -> gym.Space:
        return self.game.action_spaces[agent]

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        return self.game.observe(agent)

    def _agent_info(self, agent: str) -> dict[str, Any]:
        return {"action_mask": np.ones(self.game.action_spaces[agent].n, dtype=np.int8)}

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        if seed is not None or self._rng is None:
            self._rng, _ = seeding.np_random(seed)
        self.game.reset(self._rng, options)
        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: self._agent_info(a) for a in self.agents}
        self.agent_selection = self.game.current()

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        rewards, done = self.game.act(action)
        self.rewards = {a: float(rewards.get(a, 0.0)) for a in self.agents}
        if done:
            end = {**self.game.end_info(), "transcript": self.game.transcript()}
            self.terminations = {a: True for a in self.agents}
            self.infos = {a: {**self._agent_info(a), **end} for a in self.agents}
        else:
            self.agent_selection = self.game.current()
            self.infos = {a: self._agent_info(a) for a in self.agents}
        self._accumulate_rewards()

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return "\n".join(f"{t['role']}: {t['text'].strip()}" for t in self.game.transcript())

    def close(self) -> None:
        pass


class TextParallelEnv(ParallelEnv):
    """PettingZoo Parallel env over a :class:`TextGame`: every live agent acts each step, only the floor holder's
    action is applied (``infos[agent]["acting"]`` says who holds it; the others' actions are ignored).

    Rewards, terminations and the end ``infos`` (``transcript`` + the game's end info) are as in :class:`TextAECEnv`.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "name": "aligngym_text_parallel_v0"}

    def __init__(
        self, game: str | TextGame = "referential", render_mode: str | None = None, **kwargs: Any
    ) -> None:
        self.game = make_game(game, **kwargs)
        self.possible_agents = list(self.game.possible_agents)
        self.agents: list[str] = []
        self.render_mode = render_mode
        self._rng: np.random.Generator | None = None

    def observation_space(self, agent: str) -> gym.Space:
        return self.game.observation_space

    def action_space(self, agent: str) -> gym.Space:
        return self.game.action_spaces[agent]

    def _infos(self, end: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        floor = self.game.current()
        return {
            a: {
                "acting": a == floor and end is None,
                "action_mask": np.ones(self.game.action_spaces[a].n, dtype=np.int8),
                **(end or {}),
            }
            for a in self.agents
        }

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
        if seed is not None or self._rng is None:
            self._rng, _ = seeding.np_random(seed)
        self.game.reset(self._rng, options)
        self.agents = list(self.possible_agents)
        return {a: self.game.observe(a) for a in self.agents}, self._infos()

    def step(self, actions: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        if not self.agents:
            raise RuntimeError("the episode has ended; call reset() before stepping again")
        floor = self.game.current()
        if floor not in actions:
            raise ValueError(f"actions must include the floor holder {floor!r}, got {sorted(actions)}")
        rewards, done = self.game.act(actions[floor])
        agents = list(self.agents)
        obs = {a: self.game.observe(a) for a in agents}
        rew = {a: float(rewards.get(a, 0.0)) for a in agents}
        terms = {a: done for a in agents}
        truncs = {a: False for a in agents}
        infos = self._infos({**self.game.end_info(), "transcript": self.game.transcript()} if done else None)
        if done:
            self.agents = []
        return obs, rew, terms, truncs, infos

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return "\n".join(f"{t['role']}: {t['text'].strip()}" for t in self.game.transcript())

    def close(self) -> None:
        pass


def referential_env(**kwargs: Any) -> TextAECEnv:
    """The speaker-listener referential game, AEC API (kwargs: :class:`ReferentialGame` options, ``render_mode``)."""
    return TextAECEnv("referential", **kwargs)


def referential_parallel_env(**kwargs: Any) -> TextParallelEnv:
    """The speaker-listener referential game, Parallel API."""
    return TextParallelEnv("referential", **kwargs)


def writer_critic_env(**kwargs: Any) -> TextAECEnv:
    """The writer-critic loop, AEC API (kwargs: :class:`WriterCriticGame` options, ``render_mode``)."""
    return TextAECEnv("writer_critic", **kwargs)


def writer_critic_parallel_env(**kwargs: Any) -> TextParallelEnv:
    """The writer-critic loop, Parallel API."""
    return TextParallelEnv("writer_critic", **kwargs)


__all__ = [
    "GAMES",
    "ReferentialGame",
    "TextAECEnv",
    "TextGame",
    "TextParallelEnv",
    "WriterCriticGame",
    "make_game",
    "referential_env",
    "referential_parallel_env",
    "writer_critic_env",
    "writer_critic_parallel_env",
]
