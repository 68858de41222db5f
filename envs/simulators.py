"""User simulators for the multi-turn dialogue envs: the other party of a conversation.

A simulator is any object with ``reply(history_ids, rng) -> list[int]`` (the user's next message as token ids, without
role separators). The built-in ones (:class:`ScriptedSimulator`, :class:`GuessSimulator`, :class:`LMSimulator`) also
take the env's :class:`TurnContext` and report a goal outcome; :func:`make_simulator` resolves ``simulator=`` names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from aligngym.envs.tokenization import TextTokenizer

DIALOGUE_DATA = "dialogue"


def dialogue_data(filename: str) -> dict[str, Any]:
    """A JSON file shipped in ``aligngym.envs.data/dialogue``."""
    path = Path(str(resources.files("aligngym.envs.data").joinpath(f"{DIALOGUE_DATA}/{filename}")))
    with open(path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def words_of(text: str) -> list[str]:
    """Lowercase words of ``text`` (letters, digits and apostrophes)."""
    return re.findall(r"[a-z0-9']+", text.lower())


@runtime_checkable
class UserSimulator(Protocol):
    """The one method the dialogue envs need from the other party."""

    def reply(self, history_ids: Sequence[int], rng: np.random.Generator) -> list[int]:
        """The user's next message (token ids, no role separators) given the whole token history so far."""
        ...


@dataclass
class TurnContext:
    """What the env tells a built-in simulator about the turn it answers.

    :param agent_text: the assistant's last turn, decoded (end-of-turn token left out).
    :param agent_ids: the assistant's last turn as sampled ids.
    :param turn: index of that turn (0-based).
    :param row: the episode's opening row (``prompt`` and context columns).
    """

    agent_text: str
    agent_ids: tuple[int, ...]
    turn: int
    row: dict[str, Any] = field(default_factory=dict)


class BaseSimulator:
    """Shared plumbing of the built-in simulators: a tokenizer, a per-episode ``reset`` and a goal ``outcome``.

    ``outcome`` is ``None`` while the conversation goes on, ``"success"`` or ``"failure"`` once a goal task is
    decided (the env then ends the episode).
    """

    wants_context = True

    def __init__(self) -> None:
        self.tokenizer: TextTokenizer | None = None
        self.outcome: str | None = None

    def bind(self, tokenizer: TextTokenizer) -> None:
        """Called once by the env: the tokenizer that encodes the user's messages."""
        self.tokenizer = tokenizer

    def reset(self, row: dict[str, Any], rng: np.random.Generator) -> str | None:
        """Start an episode on ``row``; return the user's opening message, or ``None`` to use ``row["prompt"]``."""
        del row, rng
        self.outcome = None
        return None

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise RuntimeError(
                f"{type(self).__name__} is not bound to a tokenizer: call bind(tokenizer) first"
            )
        return list(self.tokenizer.encode(text))

    def reply_text(self, context: TurnContext, rng: np.random.Generator) -> str:
        raise NotImplementedError

    def reply(
        self, history_ids: Sequence[int], rng: np.random.Generator, context: TurnContext | None = None
    ) -> list[int]:
        """The user's message as ids; built-in simulators need the ``context`` the env passes."""
        del history_ids
        if context is None:
            raise ValueError(f"{type(self).__name__}.reply needs the env's TurnContext (context=...)")
        return self.encode(self.reply_text(context, rng))


class ScriptedSimulator(BaseSimulator):
    """A user that answers from shipped rules and templates (``data/dialogue/helpful_user.json`` by default).

    The first rule whose condition holds on the assistant's turn picks a reply list (``shorter_than`` words,
    ``contains_any`` words, ``ends_with`` text), else ``default``; one reply is drawn with the env's generator.

    :param script: a script dict, a path to a JSON file, or a file name shipped in ``data/dialogue``.
    """

    def __init__(self, script: dict[str, Any] | str | Path = "helpful_user.json") -> None:
        super().__init__()
        if isinstance(script, dict):
            data = script
        elif Path(script).is_file():
            data = json.loads(Path(script).read_text(encoding="utf-8"))
        else:
            data = dialogue_data(str(script))
        if not isinstance(data.get("default"), list) or not data["default"]:
            raise ValueError("a user script needs a non-empty 'default' list of replies")
        for i, rule in enumerate(data.get("rules", [])):
            if not rule.get("replies"):
                raise ValueError(f"rule {i} of the user script has no 'replies': {rule!r}")
            if not {"shorter_than", "contains_any", "ends_with"} & set(rule):
                raise ValueError(
                    f"rule {i} needs one of 'shorter_than', 'contains_any', 'ends_with', got {sorted(rule)}"
                )
        self.script = data

    def _matches(self, rule: dict[str, Any], text: str) -> bool:
        words = words_of(text)
        if "shorter_than" in rule and len(words) < int(rule["shorter_than"]):
            return True
        if "contains_any" in rule:
            low = " " + " ".join(words) + " "
            if any(f" {w.lower()} " in low for w in rule["contains_any"]):
                return True
        return "ends_with" in rule and text.rstrip().endswith(rule["ends_with"])

    def reply_text(self, context: TurnContext, rng: np.random.Generator) -> str:
        replies = self.script["default"]
        for rule in self.script.get("rules", []):
            if self._matches(rule, context.agent_text):
                replies = rule["replies"]
                break
        question = str(context.row.get("question", context.row.get("prompt", "")))
        return " " + str(replies[int(rng.integers(len(replies)))]).format(question=question)


class GuessSimulator(BaseSimulator):
    """Guess-the-animal (twenty questions): holds a secret from the shipped attribute table, answers yes/no.

    A turn that names a candidate is a guess and ends the game (``outcome`` success or failure); a turn that uses an
    attribute keyword is answered yes or no for the secret; anything else gets the list of attributes. Whole-word,
    case-insensitive matching; a guess takes precedence over a question.

    :param difficulty: 1 (4 candidates), 2 (8) or 3 (all 16); the candidate list is told in the opening message.
    :param table: the attribute table (dict) or a file name in ``data/dialogue`` (``guess_animals.json``).
    """

    def __init__(self, difficulty: int = 1, table: dict[str, Any] | str = "guess_animals.json") -> None:
        super().__init__()
        data = table if isinstance(table, dict) else dialogue_data(table)
        levels = data["difficulty_levels"]
        if isinstance(difficulty, bool) or str(difficulty) not in levels:
            raise ValueError(
                f"difficulty must be one of {sorted(int(k) for k in levels)}, got {difficulty!r}"
            )
        self.difficulty = int(difficulty)
        self.candidates: list[str] = list(levels[str(difficulty)])
        self.secrets: dict[str, dict[str, bool]] = data["secrets"]
        self.keywords = {kw: attr for attr, spec in data["attributes"].items() for kw in spec["keywords"]}
        self.templates: dict[str, str] = data["templates"]
        self.secret: str | None = None

    def reset(self, row: dict[str, Any], rng: np.random.Generator) -> str | None:
        super().reset(row, rng)
        if row.get("secret") is not None:
            secret = str(row["secret"])
            if secret not in self.candidates:
                raise ValueError(f"secret {secret!r} is not a candidate at difficulty {self.difficulty}")
            self.secret = secret
        else:
            self.secret = self.candidates[int(rng.integers(len(self.candidates)))]
        return self.templates["opening"].format(candidates=", ".join(self.candidates))

    def default_rows(self) -> list[dict[str, Any]]:
        """One opening row per candidate secret (the env draws a row, so the seed picks the secret)."""
        opening = self.templates["opening"].format(candidates=", ".join(self.candidates))
        return [{"prompt": opening, "secret": s} for s in self.candidates]

    def parse(self, text: str) -> tuple[str, str | None]:
        """``("guess", name)``, ``("question", attribute)`` or ``("unclear", None)`` for an assistant turn."""
        words = words_of(text)
        for w in words:
            if w in self.candidates:
                return "guess", w
        for w in words:
            if w in self.keywords:
                return "question", self.keywords[w]
        return "unclear", None

    def reply_text(self, context: TurnContext, rng: np.random.Generator) -> str:
        del rng
        if self.secret is None:
            raise RuntimeError("GuessSimulator.reset() must run before reply()")
        kind, what = self.parse(context.agent_text)
        if kind == "guess":
            self.outcome = "success" if what == self.secret else "failure"
            return self.templates["correct" if what == self.secret else "wrong"].format(secret=self.secret)
        if kind == "question":
            assert what is not None
            return self.templates["yes" if self.secrets[self.secret][what] else "no"]
        attrs = ", ".join(sorted({a for a in self.keywords.values()}))
        return self.templates["unclear"].format(attributes=attrs)


class LMSimulator(BaseSimulator):
    """A user played by a local causal LM (the shipped reference LM by default), sampled from the token history.

    The model reads the history ids as they are (role separators included) and samples up to ``max_reply_tokens``
    tokens with a torch generator seeded from the env's numpy generator, so a seeded episode repeats. Sampling stops
    at EOS or at a newline token; an empty reply becomes ``fallback``.

    :param model: anything :func:`aligngym.envs.reference.load_causal_lm` takes (``"default"``, a directory, a module).
    :param max_reply_tokens: the user's budget per message.
    :param temperature: sampling temperature.
    :param fallback: text used when the LM says nothing.
    """

    def __init__(
        self,
        model: Any = "default",
        max_reply_tokens: int = 16,
        temperature: float = 1.0,
        fallback: str = " Go on.",
    ) -> None:
        super().__init__()
        if max_reply_tokens <= 0 or temperature <= 0:
            raise ValueError(
                f"max_reply_tokens and temperature must be positive, got {max_reply_tokens}, {temperature}"
            )
        self.model_spec = model
        self.max_reply_tokens = int(max_reply_tokens)
        self.temperature = float(temperature)
        self.fallback = fallback
        self._model: Any = None
        self._stop: set[int] = set()

    def bind(self, tokenizer: TextTokenizer) -> None:
        super().bind(tokenizer)
        self._stop = {t for t in (tokenizer.eos_id,) if t is not None}
        self._stop |= {
            tid for tid in range(min(tokenizer.vocab_size, 4096)) if "\n" in tokenizer.decode([tid])
        }

    @property
    def model(self) -> Any:
        if self._model is None:
            from aligngym.envs.reference import load_causal_lm, model_vocab_size

            model = load_causal_lm(self.model_spec).eval()
            if self.tokenizer is not None and model_vocab_size(model) != self.tokenizer.vocab_size:
                raise ValueError(
                    f"user simulator LM has {model_vocab_size(model)} token ids but the env's tokenizer has "
                    f"{self.tokenizer.vocab_size}: the simulator must share the env's tokenizer"
                )
            self._model = model
        return self._model

    def reply(
        self, history_ids: Sequence[int], rng: np.random.Generator, context: TurnContext | None = None
    ) -> list[int]:
        """Sample the user's message from the LM given the history (see :meth:`reply_batch`)."""
        del context
        return self.reply_batch([history_ids], [rng])[0]

    def reply_batch(
        self, histories: Sequence[Sequence[int]], rngs: Sequence[np.random.Generator]
    ) -> list[list[int]]:
        """Replies for several conversations in one forward per token (left-padded histories).

        Each row draws its torch seed from its own generator, so a row samples as it would alone (up to the float
        differences that padding makes in the logits). Full forward per token: replies are short.
        """
        import torch

        if len(histories) != len(rngs):
            raise ValueError(f"{len(histories)} histories but {len(rngs)} generators")
        model = self.model
        cfg = model.config
        limit = int(getattr(cfg, "n_positions", 0) or getattr(cfg, "max_position_embeddings", 0) or 1024)
        keep = limit - self.max_reply_tokens
        gens = [torch.Generator().manual_seed(int(r.integers(2**31 - 1))) for r in rngs]
        out: list[list[int]] = [[] for _ in histories]
        alive = [True] * len(histories)
        pad = self.tokenizer.pad_id if self.tokenizer is not None else 0
        with torch.no_grad():
            for _ in range(self.max_reply_tokens):
                rows = [i for i, a in enumerate(alive) if a]
                if not rows:
                    break
                seqs = [(list(histories[i])[-keep:] + out[i]) for i in rows]
                width = max(len(q) for q in seqs)
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for k, q in enumerate(seqs):
                    ids[k, width - len(q) :] = torch.as_tensor(q, dtype=torch.long)
                    mask[k, width - len(q) :] = 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = (
                    model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
                )
                probs = torch.softmax(logits / self.temperature, dim=-1)
                for k, i in enumerate(rows):
                    tok = int(torch.multinomial(probs[k], 1, generator=gens[i]))
                    if tok in self._stop:
                        alive[i] = False
                    else:
                        out[i].append(tok)
        return [o if o else self.encode(self.fallback) for o in out]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(self.model_spec, str | Path):
            state["_model"] = None
        return state


SIMULATORS = ("scripted", "guess", "lm")


def make_simulator(spec: Any, **kwargs: Any) -> Any:
    """A simulator from ``simulator=``: ``"scripted"``, ``"guess"``, ``"lm"``, or an object with ``reply``.

    :param kwargs: constructor options of the named simulator (e.g. ``difficulty`` for ``"guess"``).
    :raises ValueError: for an unknown name; :raises TypeError: for an object without ``reply``.
    """
    if isinstance(spec, str):
        if spec == "scripted":
            return ScriptedSimulator(**kwargs)
        if spec == "guess":
            return GuessSimulator(**kwargs)
        if spec == "lm":
            return LMSimulator(**kwargs)
        raise ValueError(
            f"unknown simulator {spec!r}; expected one of {SIMULATORS} or an object with reply()"
        )
    if not callable(getattr(spec, "reply", None)):
        raise TypeError(
            f"simulator must be a name {SIMULATORS} or an object with reply(history_ids, rng) -> ids, "
            f"got {type(spec).__name__}"
        )
    return spec
