"""Episode recording and offline datasets: :class:`RecordEpisodes` writes whole episodes of any agent (single-turn or
multi-turn) to JSONL or Parquet; :func:`load_episodes` reads them back, :func:`episodes_to_sft_pairs` turns them into
SFT pairs and :func:`episodes_to_transitions` into offline-RL transitions (observations rebuilt exactly from the ids).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from aligngym.envs.runtime import runtime_of


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, np.floating | float):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


class RecordEpisodes(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Records whole episodes of any agent to a JSONL file (one JSON object per finished episode), or to Parquet.

    Each record: ``env_id``, ``prompt``, ``prompt_index``, ``prompt_ids``, ``completion``, ``completion_ids``,
    ``actions`` (per step: an index, or a list for sequence envs), ``rewards`` (per step), ``return``, ``length``,
    ``score``, ``reward_components``, ``gold_score`` and ``gold_components`` (both ``None`` when the env has no gold
    scorer), ``finish_reason``, ``terminated``, ``truncated``, ``ref_logprobs`` (per step,
    only when the env reports ``info["ref_logprob"]``), ``seed`` and ``layout`` (``max_prompt_tokens``, ``seq_len``,
    ``pad_id``: enough to rebuild every observation, see :func:`episodes_to_transitions`). An episode still running
    at ``close()`` is not written.

    Multi-turn envs (``aligngym/Dialogue-*``, ``aligngym/Guess-*``): the record also has ``multi_turn=True``,
    ``transcript`` (``[{"role", "text", "ids"}]``, the ids exactly as in the observation), ``turn_scores`` (one per
    assistant turn), ``turns``, ``success`` and ``history_ids`` (the whole token history, untruncated); ``prompt`` is
    the opening, ``prompt_ids`` the first observation's ids (``user_sep + opening + assistant_sep``),
    ``completion_ids`` the assistant's ids of every turn in order and ``completion`` the env's joined turn texts.
    ``layout`` has ``max_prompt_tokens=None`` plus the template's ``user_sep`` / ``assistant_sep`` ids. An episode
    cut by an outer ``TimeLimit`` mid-conversation has ``transcript=None`` (the env never reported one).

    :param env: an aligngym env (wrap it before observation wrappers, or after: only infos are read).
    :param path: ``*.jsonl`` (appended to, line by line, flushed after every episode) or ``*.parquet`` (needs
        ``pyarrow``; episodes are kept in memory and the file is rewritten by :meth:`flush` and ``close()``).
    :param flush_every: Parquet only: rewrite the file every this many episodes (0: only at ``close()``).

    >>> import tempfile
    >>> from pathlib import Path
    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import aligngym.envs
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     env = RecordEpisodes(gym.make("aligngym/Target-Sequence-v0"), Path(tmp) / "episodes.jsonl")
    ...     _ = env.reset(seed=0)
    ...     _ = env.step(np.array([3, 0, 4, 4]))
    ...     env.close()
    ...     [episode] = load_episodes(Path(tmp) / "episodes.jsonl")
    >>> episode["completion"], round(episode["score"], 3), round(episode["gold_score"], 3)
    (' yellow red', 0.667, 0.667)
    >>> episodes_to_sft_pairs([episode])
    [('Say: yellow red blue.', ' yellow red')]
    """

    def __init__(self, env: gym.Env, path: str | Path, flush_every: int = 0) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, path=path, flush_every=flush_every)
        gym.Wrapper.__init__(self, env)
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".jsonl", ".json", ".parquet"):
            raise ValueError(f"record path must end in .jsonl or .parquet, got {str(path)!r}")
        self.format = "parquet" if suffix == ".parquet" else "jsonl"
        if self.format == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError as err:
                raise ImportError(
                    "Parquet recording needs pyarrow (pip install pyarrow); or record to .jsonl"
                ) from err
        self.flush_every = int(flush_every)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rt = runtime_of(env, required_by="RecordEpisodes")
        #: dialogue runtimes have no fixed prompt slot: the history grows from position 0
        self.multi_turn = getattr(self._rt, "max_prompt_tokens", 0) is None
        spec = getattr(env, "spec", None)
        self.env_id = getattr(spec, "id", None)
        self._current: dict[str, Any] | None = None
        self._buffer: list[dict[str, Any]] = []
        self._fh: Any = None
        self.episodes_written = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._current = None
        ids = self._prompt_ids(obs, info)
        self._current = {
            "env_id": self.env_id,
            "prompt": info.get("prompt"),
            "prompt_index": info.get("prompt_index"),
            "prompt_ids": ids,
            "seed": seed,
            "actions": [],
            "rewards": [],
            "ref_logprobs": [],
        }
        if self.multi_turn:
            self._current["turn_scores"] = []
        return obs, info

    def _prompt_ids(self, obs: Any, info: dict[str, Any]) -> list[int]:
        """The prompt's token ids as the env placed them (from the observation, or rebuilt from the prompt set)."""
        rt = self._rt
        p = rt.max_prompt_tokens
        if (
            isinstance(obs, dict) and "input_ids" in obs
        ):  # (p is None for a dialogue: the whole first observation)
            seen = np.asarray(obs["input_ids"])[:p][np.asarray(obs["attention_mask"])[:p] > 0]
            return [int(t) for t in seen]
        if self.multi_turn:  # under an observation wrapper: rebuilt from the transcript at the episode's end
            return []
        index = info.get("prompt_index", -1)
        if index is not None and index >= 0:
            return [int(t) for t in rt.prompt_ids[index]]
        encoded = rt.tokenizer.encode(str(info.get("prompt", "")))[-p:] or [rt.tokenizer.bos_id]
        return [int(t) for t in encoded]

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        ep = self._current
        if ep is not None:
            a = np.asarray(action)
            ep["actions"].append(a.tolist() if a.ndim else int(a))
            ep["rewards"].append(float(reward))
            if "ref_logprob" in info:
                ep["ref_logprobs"].append(float(info["ref_logprob"]))
            if self.multi_turn and "turn_score" in info:
                ep["turn_scores"].append(float(info["turn_score"]))
            if terminated or truncated:
                self._end(ep, info, bool(terminated), bool(truncated))
        return obs, reward, terminated, truncated, info

    def _end(self, ep: dict[str, Any], info: dict[str, Any], terminated: bool, truncated: bool) -> None:
        rt = self._rt
        if self.multi_turn:
            self._end_dialogue(ep, info)
            completion_ids, completion = ep["completion_ids"], ep["completion"]
        elif "completion_ids" in info:
            completion_ids = [int(t) for t in info["completion_ids"]]
            completion = info.get("completion")
        else:  # cut by an outer TimeLimit before the env finished: the tokens so far
            actions = ep["actions"]
            flat = [a for step in actions for a in (step if isinstance(step, list) else [step])]
            completion_ids = [int(t) for t in rt.tokens_of(np.asarray(flat, dtype=np.int64))]
            completion = rt.tokenizer.decode(completion_ids)
        ep.update(
            {
                "completion": completion,
                "completion_ids": completion_ids,
                "score": info.get("score"),
                "reward_components": dict(info.get("reward_components", {})),
                "gold_score": info.get("gold_score"),
                "gold_components": dict(info["gold_components"]) if "gold_components" in info else None,
                "finish_reason": info.get("finish_reason", "truncated" if truncated else None),
                "terminated": terminated,
                "truncated": truncated,
                "return": float(np.sum(ep["rewards"])),
                "length": len(ep["rewards"]),
                "layout": self._layout(),
            }
        )
        if not ep["ref_logprobs"]:
            ep["ref_logprobs"] = None
        self._current = None
        self._write(_jsonable(ep))

    def _layout(self) -> dict[str, Any]:
        rt = self._rt
        layout: dict[str, Any] = {
            "max_prompt_tokens": None if self.multi_turn else int(rt.max_prompt_tokens),
            "seq_len": int(rt.seq_len),
            "pad_id": int(rt.tokenizer.pad_id),
        }
        if self.multi_turn:
            layout["user_sep"] = [int(t) for t in rt.user_sep]
            layout["assistant_sep"] = [int(t) for t in rt.assistant_sep]
        return layout

    def _end_dialogue(self, ep: dict[str, Any], info: dict[str, Any]) -> None:
        """The multi-turn fields: transcript, per-turn scores, the whole history (see the class docstring)."""
        rt = self._rt
        ep["multi_turn"] = True
        ep["prompt"] = info.get("prompt", ep["prompt"])
        ep["prompt_index"] = info.get("prompt_index", ep["prompt_index"])
        ep["turns"] = info.get("turn")
        ep["success"] = info.get("success")
        transcript = info.get("transcript")
        if transcript is None:  # cut by an outer TimeLimit mid-conversation: the agent's tokens so far
            flat = [a for step in ep["actions"] for a in (step if isinstance(step, list) else [step])]
            ep["transcript"] = ep["history_ids"] = None
            ep["completion_ids"] = [int(t) for t in rt.tokens_of(np.asarray(flat, dtype=np.int64))]
            ep["completion"] = rt.tokenizer.decode(ep["completion_ids"])
            return
        turns = [
            {"role": str(t["role"]), "text": str(t["text"]), "ids": [int(i) for i in t["ids"]]}
            for t in transcript
        ]
        layout = self._layout()
        ep["transcript"] = turns
        ep["turn_scores"] = [float(x) for x in info.get("turn_scores", ep["turn_scores"])]
        ep["prompt_ids"] = layout["user_sep"] + turns[0]["ids"] + layout["assistant_sep"]
        history = _dialogue_history(turns, layout)
        ep["history_ids"] = history[-1][2] if history else ep["prompt_ids"]
        ep["completion_ids"] = [i for t in turns if t["role"] == "assistant" for i in t["ids"]]
        ep["completion"] = info.get("completion")

    def _write(self, record: dict[str, Any]) -> None:
        self.episodes_written += 1
        if self.format == "jsonl":
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._fh.flush()
            return
        self._buffer.append(record)
        if self.flush_every and len(self._buffer) % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        """Parquet: write every episode recorded so far (JSONL is flushed after each episode anyway)."""
        if self.format == "parquet" and self._buffer:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(self._buffer), self.path)

    def close(self) -> None:
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()


def load_episodes(path: str | Path) -> list[dict[str, Any]]:
    """Episodes written by :class:`RecordEpisodes` (``.jsonl`` or ``.parquet``), in recording order.

    :raises ValueError: for a line that is not valid JSON (with its line number).
    """
    p = Path(path)
    if p.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError("reading Parquet episodes needs pyarrow (pip install pyarrow)") from err
        rows = pq.read_table(p).to_pylist()
        # Parquet stores a dict column as a struct over the union of keys: drop the absent ones
        for r in rows:
            for key in ("reward_components", "gold_components"):
                if r.get(key) is not None:
                    r[key] = {k: v for k, v in r[key].items() if v is not None}
        return rows
    out = []
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{p}:{lineno}: not a JSON episode record: {err}") from err
    return out


def episodes_to_sft_pairs(
    episodes: Iterable[dict[str, Any]],
    min_score: float | None = None,
    top_fraction: float | None = None,
    best_per_prompt: bool = False,
) -> list[tuple[str, str]]:
    """``(prompt, completion)`` pairs for supervised fine-tuning (``SFTTrainer`` takes such a list), best first.

    :param min_score: keep episodes scoring at least this.
    :param top_fraction: keep this best fraction (0, 1] of the episodes left (rejection sampling / filtered BC).
    :param best_per_prompt: keep only the best-scoring episode of each prompt.
    :raises ValueError: for a multi-turn episode: one (prompt, completion) text pair would drop the user's replies
        and re-tokenize the turns; train on its ``transcript`` ids or :func:`episodes_to_transitions` instead.
    """
    episodes = list(episodes)
    for i, e in enumerate(episodes):
        if e.get("multi_turn"):
            raise ValueError(
                f"episode {i} ({e.get('env_id')}) is a multi-turn conversation: a (prompt, completion) text pair "
                "would drop the user's replies and re-tokenize the agent's turns; use its 'transcript' / "
                "'history_ids' (exact ids) or episodes_to_transitions"
            )
    eps = [e for e in episodes if e.get("completion") is not None]
    if min_score is not None:
        eps = [e for e in eps if e.get("score") is not None and e["score"] >= min_score]
    eps.sort(key=lambda e: -float(e["score"]) if e.get("score") is not None else math.inf)
    if best_per_prompt:
        seen: set[str] = set()
        eps = [e for e in eps if not (e["prompt"] in seen or seen.add(e["prompt"]))]  # type: ignore[func-returns-value]
    if top_fraction is not None:
        if not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        eps = eps[: max(1, math.ceil(len(eps) * top_fraction))] if eps else []
    return [(str(e["prompt"]), str(e["completion"])) for e in eps]


def _layout_obs(
    prompt_ids: Sequence[int], completion: Sequence[int], layout: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    p, seq_len, pad = layout["max_prompt_tokens"], layout["seq_len"], layout["pad_id"]
    ids = np.full(seq_len, pad, dtype=np.int64)
    mask = np.zeros(seq_len, dtype=np.int64)
    ids[p - len(prompt_ids) : p] = prompt_ids
    mask[p - len(prompt_ids) : p] = 1
    ids[p : p + len(completion)] = completion
    mask[p : p + len(completion)] = 1
    return ids, mask


def _dialogue_history(
    turns: Sequence[dict[str, Any]], layout: dict[str, Any]
) -> list[tuple[list[int], list[int], list[int]]]:
    """``(history before, the turn's ids, history after)`` per assistant turn of a transcript (the env's own rule).

    The history starts ``user_sep + opening + assistant_sep``; a turn appends its ids; a user reply appends
    ``user_sep + reply`` and, when the conversation goes on, ``assistant_sep``.
    """
    user_sep, assistant_sep = list(layout["user_sep"]), list(layout["assistant_sep"])
    hist = user_sep + list(turns[0]["ids"]) + assistant_sep
    out = []
    rest = turns[1:]
    for i, entry in enumerate(rest):
        if entry["role"] != "assistant":
            continue
        end = hist + list(entry["ids"])
        if i + 1 < len(rest) and rest[i + 1]["role"] == "user":
            end += user_sep + list(rest[i + 1]["ids"]) + (assistant_sep if i + 2 < len(rest) else [])
        out.append((hist, list(entry["ids"]), end))
        hist = end
    return out


def _dialogue_obs(history: Sequence[int], layout: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A dialogue observation: the history's last ``seq_len`` ids from position 0, then padding."""
    seq_len = layout["seq_len"]
    visible = list(history)[-seq_len:]
    ids = np.full(seq_len, layout["pad_id"], dtype=np.int64)
    mask = np.zeros(seq_len, dtype=np.int64)
    ids[: len(visible)] = visible
    mask[: len(visible)] = 1
    return ids, mask


def _dialogue_steps(
    ep: dict[str, Any], e_idx: int, layout: dict[str, Any], sequence: bool
) -> list[tuple[list[int], list[int]]]:
    """(history before, history after) of every step of a recorded multi-turn episode."""
    if ep.get("transcript") is None:
        raise ValueError(
            f"episode {e_idx} was cut (e.g. by a TimeLimit) before the env reported its transcript: its "
            "multi-turn observations cannot be rebuilt; drop it or let the env end the conversation"
        )
    steps = []
    for hist, turn_ids, end in _dialogue_history(ep["transcript"], layout):
        if sequence:
            steps.append((hist, end))
            continue
        for j in range(len(turn_ids)):
            after = hist + turn_ids[: j + 1] if j < len(turn_ids) - 1 else end
            steps.append((hist + turn_ids[:j], after))
    if len(steps) != len(ep["actions"]):
        raise ValueError(
            f"episode {e_idx}: {len(ep['actions'])} actions but its transcript gives {len(steps)} steps"
        )
    return steps


def episodes_to_transitions(episodes: Iterable[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Offline-RL transitions (D4RL-style arrays) rebuilt from recorded episodes of one env.

    Token envs give one transition per token, sequence envs one per episode (multi-turn sequence envs: one per
    turn). Observations are rebuilt exactly from ``prompt_ids``, ``completion_ids`` and ``layout``; multi-turn ones
    from the ``transcript`` and the template ids in ``layout`` (the history's last ``seq_len`` ids, as the env shows).

    :return: ``observations.input_ids`` / ``observations.attention_mask`` and ``next_observations.*`` int64 (N, L),
        ``actions`` int64 (N,) or (N, T), ``rewards`` float32 (N,), ``terminals`` and ``timeouts`` bool (N,),
        ``episode_index`` int64 (N,).
    :raises ValueError: if episodes come from envs with different layouts, an episode is inconsistent, or a
        multi-turn episode was cut before the env reported its transcript.
    """
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "ids",
            "mask",
            "next_ids",
            "next_mask",
            "actions",
            "rewards",
            "terminals",
            "timeouts",
            "episode",
        )
    }
    layout: dict[str, Any] | None = None
    for e_idx, ep in enumerate(episodes):
        if layout is None:
            layout = ep["layout"]
        elif ep["layout"] != layout:
            raise ValueError(
                f"episode {e_idx} has layout {ep['layout']}, episode 0 has {layout}: one env per call"
            )
        actions, rewards, comp = ep["actions"], ep["rewards"], ep["completion_ids"]
        sequence = bool(actions) and isinstance(actions[0], list)
        n = len(actions)
        multi = layout.get("max_prompt_tokens") is None
        steps = _dialogue_steps(ep, e_idx, layout, sequence) if multi else []
        if not multi and not sequence and len(comp) != n:
            raise ValueError(f"episode {e_idx}: {n} token actions but {len(comp)} completion ids")
        for t in range(n):
            if multi:
                ids, mask = _dialogue_obs(steps[t][0], layout)
                nids, nmask = _dialogue_obs(steps[t][1], layout)
            else:
                before = [] if sequence else comp[:t]
                after = comp if sequence else comp[: t + 1]
                ids, mask = _layout_obs(ep["prompt_ids"], before, layout)
                nids, nmask = _layout_obs(ep["prompt_ids"], after, layout)
            last = t == n - 1
            cols["ids"].append(ids)
            cols["mask"].append(mask)
            cols["next_ids"].append(nids)
            cols["next_mask"].append(nmask)
            cols["actions"].append(actions[t])
            cols["rewards"].append(rewards[t])
            cols["terminals"].append(last and bool(ep["terminated"]))
            cols["timeouts"].append(last and bool(ep["truncated"]) and not ep["terminated"])
            cols["episode"].append(e_idx)
    if layout is None:
        raise ValueError("no episodes given")
    return {
        "observations.input_ids": np.stack(cols["ids"]),
        "observations.attention_mask": np.stack(cols["mask"]),
        "next_observations.input_ids": np.stack(cols["next_ids"]),
        "next_observations.attention_mask": np.stack(cols["next_mask"]),
        "actions": np.asarray(cols["actions"], dtype=np.int64),
        "rewards": np.asarray(cols["rewards"], dtype=np.float32),
        "terminals": np.asarray(cols["terminals"], dtype=bool),
        "timeouts": np.asarray(cols["timeouts"], dtype=bool),
        "episode_index": np.asarray(cols["episode"], dtype=np.int64),
    }


__all__ = ["RecordEpisodes", "episodes_to_sft_pairs", "episodes_to_transitions", "load_episodes"]
