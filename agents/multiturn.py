"""Multi-turn rollouts, credit assignment and log-prob bookkeeping for the dialogue envs (``Dialogue-*``, ``Guess-*``).

:func:`play_conversations` plays one conversation per row of a vector env and checks every observation against the
history rebuilt from the transcript (:func:`history_from_transcript`); :func:`pack_conversations` lays them out as
padded tensors; :func:`history_forward` scores every assistant token of whole histories in one forward pass (the
update-time log-probs that must equal the sampling-time ones, plus values and entropies); :func:`turn_level_returns`
spreads per-turn rewards over the tokens of each turn (turn-level credit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from aligngym.agents.vector_envs import AUTORESET_MODES, autoreset_mode, info_value


def history_from_transcript(
    transcript: Sequence[dict[str, Any]], user_sep: Sequence[int], assistant_sep: Sequence[int]
) -> tuple[list[int], list[bool]]:
    """The token history a dialogue env showed, rebuilt from its transcript, and which ids the assistant sampled.

    The layout is ``user_sep + user ids + assistant_sep + assistant ids + user_sep + ...``; the separators are the
    env's ``runtime.user_sep`` / ``runtime.assistant_sep``. A final user message (the answer after the last turn)
    has no assistant separator after it.

    :returns: ``(ids, assistant)``: the ids and a same-length list, True where the assistant sampled the id.
    :raises ValueError: for a transcript whose roles do not alternate starting with the user.
    """
    ids: list[int] = []
    assistant: list[bool] = []
    for k, turn in enumerate(transcript):
        want = "user" if k % 2 == 0 else "assistant"
        if turn["role"] != want:
            raise ValueError(
                f"transcript[{k}] has role {turn['role']!r}; roles must alternate user, assistant, ..."
            )
        if want == "user":
            part = list(user_sep) + list(turn["ids"])
            if k + 1 < len(transcript):
                part += list(assistant_sep)
            ids += part
            assistant += [False] * len(part)
        else:
            ids += list(turn["ids"])
            assistant += [True] * len(turn["ids"])
    return ids, assistant


def history_forward(
    policy: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    assistant_mask: torch.Tensor,
    temperature: float = 1.0,
    action_masks: torch.Tensor | None = None,
    with_values: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Log-probs, values and entropies of the assistant's tokens of whole histories in one forward pass.

    :param policy: a :class:`~aligngym.agents.policies.CausalLMPolicy` (its ``model``, ``action_ids`` and value head
        are used) or a ``transformers`` causal LM (full vocabulary, no values).
    :param input_ids: LongTensor (B, L): histories laid out from position 0 (the dialogue env's observation).
    :param attention_mask: (B, L), 1 on the history.
    :param assistant_mask: bool (B, L), True on the assistant's ids (never on position 0).
    :param temperature: the sampling temperature the rollout used.
    :param action_masks: bool (B, L, k): the valid actions when the id at each position was sampled (the env's
        ``info["action_mask"]``); invalid actions get probability 0, as when sampling.
    :param with_values: also return the value of the state before each assistant token (needs a value head).
    :returns: ``(logp, values, entropy)``, float32 (B, L) each, 0 off the assistant positions: log pi(id_t | ids_<t),
        V(ids_<t) (``None`` unless ``with_values``) and the entropy of pi(. | ids_<t).
    """
    if bool(assistant_mask[:, 0].any()):
        raise ValueError("an assistant token at position 0 has no context to be scored from")
    model = getattr(policy, "model", policy)
    action_ids = getattr(policy, "action_ids", None)
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, output_hidden_states=with_values
    )
    logits = out.logits.float()[:, :-1] / temperature  # logits at t-1 predict the id at t
    target = input_ids[:, 1:]
    if action_ids is not None:  # restricted actions: softmax over the action tokens only
        logits = logits.index_select(-1, action_ids)
        lookup = torch.full((int(model.config.vocab_size),), -1, dtype=torch.long, device=input_ids.device)
        lookup[action_ids] = torch.arange(len(action_ids), device=input_ids.device)
        target = lookup[target].clamp(min=0)
    if action_masks is not None:
        logits = logits.masked_fill(~action_masks[:, 1:].bool(), torch.finfo(logits.dtype).min)
    log_all = torch.log_softmax(logits, dim=-1)
    on = assistant_mask[:, 1:].to(log_all.dtype)
    logp = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    entropy = torch.zeros_like(logp)
    logp[:, 1:] = log_all.gather(-1, target.unsqueeze(-1)).squeeze(-1) * on
    entropy[:, 1:] = -(log_all.exp() * log_all).sum(-1) * on
    values = None
    if with_values:
        values = torch.zeros_like(logp)
        values[:, 1:] = policy._value(out.hidden_states[-1][:, :-1]) * on
    return logp, values, entropy


def history_logprobs(
    policy: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    assistant_mask: torch.Tensor,
    temperature: float = 1.0,
    action_masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-probs float32 (B, L) of the assistant's tokens, 0 elsewhere (:func:`history_forward`'s first output)."""
    return history_forward(policy, input_ids, attention_mask, assistant_mask, temperature, action_masks)[0]


def turn_level_returns(
    turn_rewards: Sequence[float], tokens_per_turn: Sequence[int], gamma: float = 1.0
) -> np.ndarray:
    """Turn-level credit: every token of turn k gets the discounted return from turn k on.

    G_k = sum_{j >= k} gamma^(j - k) r_j over turns (the episode score belongs in the last turn's reward); token
    positions within a turn share their turn's G_k, so the discount counts turns, not tokens.

    :param turn_rewards: r_k, one per assistant turn.
    :param tokens_per_turn: the number of ids of each turn.
    :returns: float64 (sum(tokens_per_turn),), the return of every assistant token in order.
    """
    if len(turn_rewards) != len(tokens_per_turn):
        raise ValueError(f"{len(turn_rewards)} turn rewards but {len(tokens_per_turn)} turns")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    g, returns = 0.0, []
    for r in reversed(list(turn_rewards)):
        g = float(r) + gamma * g
        returns.append(g)
    returns.reverse()
    return np.repeat(np.asarray(returns, dtype=np.float64), np.asarray(tokens_per_turn, dtype=np.int64))


def is_multi_turn(env: Any) -> bool:
    """Whether ``env`` (single, vector or wrapped) is a multi-turn dialogue env (its runtime has ``max_turns``)."""
    from aligngym.envs.runtime import runtime_of

    runtime = runtime_of(env)
    return runtime is not None and hasattr(runtime, "max_turns") and hasattr(runtime, "user_sep")


def require_single_turn(env: Any, agent: str, use: str) -> None:
    """Refuse a multi-turn env in a single-turn agent, naming the agent to use instead.

    :param env: the env given to the agent.
    :param agent: the refusing agent's class name.
    :param use: the multi-turn agent to name (``"MultiTurnPPOAgent"``, ``"MultiTurnGRPOAgent"``).
    :raises TypeError: when ``env`` is a dialogue env.
    """
    if is_multi_turn(env):
        spec = getattr(env, "spec", None)
        name = getattr(spec, "id", None) or type(getattr(env, "unwrapped", env)).__name__
        module = {"MultiTurnPPOAgent": "multiturn_ppo", "MultiTurnGRPOAgent": "multiturn_grpo"}.get(
            use, "multiturn"
        )
        raise TypeError(
            f"{agent} trains on single-turn envs (one prompt slot + one completion), but {name} is a multi-turn "
            f"dialogue env: use aligngym.agents.{module}.{use}"
        )


def turn_position(input_ids: np.ndarray, length: int, assistant_sep: Sequence[int]) -> int:
    """Tokens of the assistant's turn in progress: the ids after the last assistant separator of ``ids[:length]``.

    :param input_ids: int (L,), one dialogue observation.
    :param length: attended tokens (``attention_mask.sum()``).
    :param assistant_sep: the env's ``runtime.assistant_sep``.
    """
    from aligngym.envs.dialogue_runtime import turn_progress

    return turn_progress(np.asarray(input_ids)[:length], assistant_sep)[1]


@torch.no_grad()
def sample_tokens(
    policy: Any,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    valid: np.ndarray,
    temperature: float,
    generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One token per row from a causal-LM policy on dialogue observations (tempered, invalid actions masked).

    :param policy: a :class:`~aligngym.agents.policies.CausalLMPolicy` (``policy(ids, mask)`` -> logits (B, k)).
    :param input_ids: int (B, L) observations.
    :param attention_mask: int (B, L).
    :param valid: bool (B, k) valid actions.
    :param temperature: sampling temperature.
    :param generator: the sampling generator (on the policy's device).
    :returns: actions int64 (B,) and their log-probs float32 (B,) under the tempered, masked distribution.
    """
    device = generator.device
    logits = policy(torch.as_tensor(input_ids, device=device), torch.as_tensor(attention_mask, device=device))
    logits = logits.float() / temperature
    allowed = torch.as_tensor(valid, device=device)
    logp = torch.log_softmax(logits.masked_fill(~allowed, torch.finfo(logits.dtype).min), -1)
    actions = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    chosen = logp.gather(-1, actions[:, None]).squeeze(-1)
    return actions.cpu().numpy().astype(np.int64), chosen.cpu().numpy()


@dataclasses.dataclass
class Conversation:
    """One finished conversation of :func:`play_conversations`, with what the updates need.

    :param ids: the exact token history (:func:`history_from_transcript` of the final transcript).
    :param assistant: same length as ``ids``, True on the assistant's sampled ids.
    :param actions: the action index sampled at each assistant token, in order.
    :param sampled_logp: log pi of each sampled action when it was sampled.
    :param valid: bool (n_tokens, k): the valid actions at each assistant token.
    :param rewards: the env's reward after each assistant token (turn scores at turn ends, the episode's at the end).
    :param tokens_per_turn: ids of each assistant turn.
    :param score: ``info["score"]``.
    :param success: ``info["success"]``.
    :param finish_reason: ``info["finish_reason"]``.
    :param transcript: ``info["transcript"]`` (``[{"role", "text", "ids"}]``).
    """

    ids: list[int]
    assistant: list[bool]
    actions: list[int]
    sampled_logp: list[float]
    valid: np.ndarray
    rewards: list[float]
    tokens_per_turn: list[int]
    score: float
    success: bool
    finish_reason: str
    transcript: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def episode_return(self) -> float:
        return float(sum(self.rewards))

    def turn_rewards(self) -> list[float]:
        """The reward of each assistant turn (the rewards of its tokens summed)."""
        ends = np.cumsum(self.tokens_per_turn)
        starts = ends - np.asarray(self.tokens_per_turn)
        return [float(sum(self.rewards[a:b])) for a, b in zip(starts, ends)]


#: ``act(input_ids (B, L), attention_mask (B, L), valid (B, k)) -> (actions int64 (B,), logp float (B,))``
ActFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def play_conversations(
    venv: Any, act: ActFn, seed: int, options: dict[str, Any] | None = None
) -> list[Conversation]:
    """One conversation per row of a dialogue vector env, each checked token by token.

    On ``-Token-v0`` envs each step is one sampled token; on ``-Sequence-v0`` envs the policy samples a whole turn
    token by token (up to its first end-of-turn id; the env cuts there too) and the env takes it in one step, the
    turn's reward going to its last token. Rows that finish idle (NEXT_STEP / SAME_STEP: their next episodes are played and ignored; DISABLED: they are
    reset with ``reset_mask`` and idle there) until every row is done. Every observation the policy acted on must
    equal the prefix of the rebuilt history before the sampled id, and the id at that position must be the sampled
    one: the history the update scores is the one that was sampled from.

    :param venv: a Gymnasium ``VectorEnv`` of dialogue envs (native or sync).
    :param act: the policy (see :data:`ActFn`).
    :param seed: the reset seed.
    :param options: reset options (``{"prompt_index": i}``: every row starts from opening i).
    :raises RuntimeError: when an observation is not the rebuilt history, or a row is truncated (``TimeLimit``).
    """
    from aligngym.envs.runtime import runtime_of

    rt = runtime_of(venv, required_by="play_conversations")
    if rt.context_overflow == "truncate":
        raise ValueError(
            "multi-turn agents need context_overflow='end' or 'error': truncated histories are not exact"
        )
    mode = autoreset_mode(venv, AUTORESET_MODES)
    n = venv.num_envs
    obs, info = venv.reset(seed=seed, options=options)
    base = np.asarray(rt.action_mask(1), dtype=bool)  # valid at every turn position except the first
    idle = int(next(a for a in np.flatnonzero(base) if rt.token_of(int(a)) != rt.eos_id))
    steps: list[list[tuple[np.ndarray, int, float, np.ndarray, float]]] = [[] for _ in range(n)]
    finals: list[dict[str, Any]] = [{} for _ in range(n)]
    alive = np.ones(n, dtype=bool)
    valid = _row_masks(info, n, rt.n_actions)
    sequence = isinstance(getattr(venv, "single_action_space", None), gym.spaces.MultiDiscrete)
    while alive.any():
        ids, mask = np.asarray(obs["input_ids"]), np.asarray(obs["attention_mask"])
        if sequence:
            turn, kept = sample_turn(rt, act, ids, mask, alive, idle)
            obs, reward, terminated, truncated, info = venv.step(turn)
            for i in np.flatnonzero(alive):
                last = len(kept[i]) - 1
                steps[i] += [(*k, float(reward[i]) if j == last else 0.0) for j, k in enumerate(kept[i])]
        else:
            actions, logp = act(ids, mask, valid)
            actions = np.where(alive, np.asarray(actions, dtype=np.int64), idle)
            obs, reward, terminated, truncated, info = venv.step(actions)
            for i in np.flatnonzero(alive):
                seen = ids[i, : int(mask[i].sum())].copy()
                steps[i].append((seen, int(actions[i]), float(logp[i]), valid[i].copy(), float(reward[i])))
        if (np.asarray(truncated) & alive).any():
            raise RuntimeError("a conversation was truncated (TimeLimit?): its transcript is missing")
        ended = np.asarray(terminated, dtype=bool) & alive
        for i in np.flatnonzero(ended):
            finals[i] = {
                k: info_value(info, k, int(i), mode)
                for k in ("transcript", "score", "success", "finish_reason")
            }
        alive &= ~ended
        if mode == "Disabled" and ended.any():
            venv.reset(options={"reset_mask": ended})
        valid = _row_masks(info, n, rt.n_actions) if not sequence else valid
    return [_conversation(rt, s, f) for s, f in zip(steps, finals)]


def sample_turn(
    rt: Any, act: ActFn, input_ids: np.ndarray, attention_mask: np.ndarray, rows: np.ndarray, idle: int
) -> tuple[np.ndarray, list[list[tuple[np.ndarray, int, float, np.ndarray]]]]:
    """A whole assistant turn per row, sampled token by token from the observations (a ``-Sequence-v0`` action).

    :param rt: the env's runtime (``max_turn_tokens``, ``action_mask``, ``token_of``, ``eos_id``).
    :param act: the policy (see :data:`ActFn`).
    :param input_ids: int (B, L) observations at the start of the turn.
    :param attention_mask: int (B, L).
    :param rows: bool (B,), the rows to sample for (the others get ``idle`` actions).
    :param idle: an action valid at every position of a turn.
    :returns: the turns int64 (B, max_turn_tokens) (after a row's end-of-turn id: ``idle``, which the env ignores)
        and, per row, ``(history before the token, action, log-prob, valid actions)`` of each kept token.
    """
    n, t_max = input_ids.shape[0], rt.max_turn_tokens
    ids, mask = input_ids.copy(), attention_mask.copy()
    lengths = mask.sum(1).astype(int)
    turns = np.full((n, t_max), idle, dtype=np.int64)
    kept: list[list[tuple[np.ndarray, int, float, np.ndarray]]] = [[] for _ in range(n)]
    writing = np.asarray(rows, dtype=bool).copy()
    for j in range(t_max):
        valid = np.tile(np.asarray(rt.action_mask(j), dtype=bool), (n, 1))
        actions, logp = act(ids, mask, valid)
        for i in np.flatnonzero(writing):
            pos, a = lengths[i] + j, int(actions[i])
            kept[i].append((ids[i, :pos].copy(), a, float(logp[i]), valid[i].copy()))
            turns[i, j] = a
            ids[i, pos], mask[i, pos] = rt.token_of(a), 1
            if rt.eos_id is not None and rt.token_of(a) == rt.eos_id:
                writing[i] = False
        if not writing.any():
            break
    return turns, kept


def _row_masks(info: dict[str, Any], n: int, k: int) -> np.ndarray:
    if "action_mask" not in info:
        return np.ones((n, k), dtype=bool)
    return np.stack([np.asarray(m, dtype=bool) for m in info["action_mask"]])


def _conversation(rt: Any, steps: list[tuple[Any, ...]], final: dict[str, Any]) -> Conversation:
    """Rebuild the history of one row and check every step's observation against it."""
    if final.get("transcript") is None:
        raise RuntimeError("a finished conversation reported no transcript in its final info")
    ids, assistant = history_from_transcript(final["transcript"], rt.user_sep, rt.assistant_sep)
    positions = [p for p, a in enumerate(assistant) if a]
    if len(positions) != len(steps):
        raise RuntimeError(f"{len(steps)} tokens were sampled but the transcript holds {len(positions)}")
    for t, (pos, (seen, action, _, _, _)) in enumerate(zip(positions, steps)):
        if len(seen) != pos or seen.tolist() != ids[:pos] or ids[pos] != rt.token_of(action):
            raise RuntimeError(
                f"step {t}: the observation ({len(seen)} ids) is not the history before the sampled id at {pos}: "
                "the history was not kept token-exact"
            )
    turns = [len(t["ids"]) for t in final["transcript"] if t["role"] == "assistant"]
    return Conversation(
        ids=ids,
        assistant=assistant,
        actions=[s[1] for s in steps],
        sampled_logp=[s[2] for s in steps],
        valid=np.stack([s[3] for s in steps]),
        rewards=[s[4] for s in steps],
        tokens_per_turn=turns,
        score=float(final["score"]),
        success=bool(final.get("success")),
        finish_reason=str(final.get("finish_reason")),
        transcript=list(final["transcript"]),
    )


def pack_conversations(
    conversations: Sequence[Conversation], pad_id: int, device: Any = "cpu"
) -> dict[str, torch.Tensor]:
    """Conversations as padded tensors for one forward pass.

    :param conversations: from :func:`play_conversations` (or any with the same fields).
    :param pad_id: the tokenizer's pad id.
    :param device: where the tensors go.
    :returns: ``input_ids``/``attention_mask`` (B, L), ``assistant`` bool (B, L), ``valid`` bool (B, L, k),
        ``sampled_logp`` and ``rewards`` float32 (B, L) (0 off the assistant positions), ``positions`` long (B, T)
        (the assistant positions in order, 0-padded) and ``token_mask`` float32 (B, T).
    """
    b = len(conversations)
    length = max(len(c.ids) for c in conversations)
    t_max = max(len(c.actions) for c in conversations)
    k = int(conversations[0].valid.shape[1])
    out = {
        "input_ids": torch.full((b, length), int(pad_id), dtype=torch.long),
        "attention_mask": torch.zeros((b, length), dtype=torch.long),
        "assistant": torch.zeros((b, length), dtype=torch.bool),
        "valid": torch.ones((b, length, k), dtype=torch.bool),
        "sampled_logp": torch.zeros((b, length)),
        "rewards": torch.zeros((b, length)),
        "positions": torch.zeros((b, t_max), dtype=torch.long),
        "token_mask": torch.zeros((b, t_max)),
    }
    for i, c in enumerate(conversations):
        n, pos = len(c.ids), torch.as_tensor([p for p, a in enumerate(c.assistant) if a], dtype=torch.long)
        out["input_ids"][i, :n] = torch.as_tensor(c.ids)
        out["attention_mask"][i, :n] = 1
        out["assistant"][i, pos] = True
        out["valid"][i, pos] = torch.as_tensor(c.valid)
        out["sampled_logp"][i, pos] = torch.as_tensor(c.sampled_logp, dtype=torch.float32)
        out["rewards"][i, pos] = torch.as_tensor(c.rewards, dtype=torch.float32)
        out["positions"][i, : len(pos)] = pos
        out["token_mask"][i, : len(pos)] = 1.0
    return {key: value.to(device) for key, value in out.items()}


__all__ = [
    "ActFn",
    "Conversation",
    "history_forward",
    "history_from_transcript",
    "history_logprobs",
    "is_multi_turn",
    "pack_conversations",
    "play_conversations",
    "require_single_turn",
    "sample_tokens",
    "sample_turn",
    "turn_level_returns",
    "turn_position",
]
