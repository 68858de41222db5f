"""Reward-guided decoding: steer a frozen causal LM at decode time, no training (Deng and Raffel 2023, RAD-like).

At each step the top-k candidate next tokens are appended to the completion so far and scored by a scorer (the env's
task scorer by default: relevance, fluency, task success, or any weighted composite); the logits get
``w * bonus``, bonus = score(prefix + candidate) - score(prefix). ``w = 0`` is plain decoding, exactly.
:class:`RewardGuidedDecoder` is an agent (``learn`` is a no-op) so it is benchmarked on the same envs as the others.
By default it is an *oracle* (``agent.is_oracle``): it reads the evaluation scorer and the test rows' context columns
(``reference``, ``keywords`` ...); with ``guide_scorer=`` it decodes with a proxy scorer or a trained reward model
that sees the prompt and the completion only. An oracle built on the train env finds a test prompt's row among the
task's shipped rows of every split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from aligngym.agents.base import AgentConfig, Callback
from aligngym.agents.lm_agent import LMAgent, LMAgentConfig, autocast_context
from aligngym.agents.sampling import process_logits, sample_actions
from aligngym.envs.scorers import BaseScorer, make_scorer

BONUSES = ("delta", "score")
_NOT_CONTEXT = {"prompt", "split"}


@dataclasses.dataclass
class DecodingConfig(LMAgentConfig, AgentConfig):
    """Options of :class:`RewardGuidedDecoder` (plus the agent and LM fields; ``reference`` is unused).

    :param weight: w, the weight of the scorer bonus on the logits (0: plain decoding).
    :param candidates: top-k candidate tokens scored at each step.
    :param scorer: oracle mode: ``None`` (the env's task scorer, i.e. the evaluation scorer), a registered name, a
        ``{name: weight}`` composite, or an object; called with the prompt row's context columns.
    :param guide_scorer: non-oracle mode: a proxy scorer or a trained reward model (anything ``make_scorer`` takes,
        e.g. ``{"reward_model": 1.0}``), called with prompts and completions only, never with the test rows' context
        columns. Excludes ``scorer``.
    :param bonus: ``"delta"`` (score(prefix + candidate) - score(prefix)) or ``"score"`` (score(prefix + candidate)).
    :param temperature: sampling temperature after the bonus (``deterministic=True``: argmax).
    :param top_k: top-k filtering after the bonus (0: off).
    :param top_p: nucleus filtering after the bonus (1: off).
    """

    weight: float = 1.0
    candidates: int = 20
    scorer: Any = None
    guide_scorer: Any = None
    bonus: str = "delta"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.bonus not in BONUSES:
            raise ValueError(f"bonus must be one of {BONUSES}, got {self.bonus!r}")
        if self.candidates <= 0:
            raise ValueError(f"candidates must be positive, got {self.candidates}")
        if self.scorer is not None and self.guide_scorer is not None:
            raise ValueError(
                "give scorer= (oracle: reads the prompt rows' context) or guide_scorer= (prompt and completion "
                f"only), not both; got scorer={self.scorer!r}, guide_scorer={self.guide_scorer!r}"
            )


class RewardGuidedDecoder(LMAgent):
    """Decode with ``logits + w * bonus`` from a scorer on the top-k candidate continuations (module docstring).

    Works on token-level envs (``predict`` gives the next token) and sequence-level envs (``predict`` gives the whole
    completion, generated with the KV cache). In oracle mode (``is_oracle``: no ``guide_scorer``) the scorer gets the
    per-prompt context columns (``keywords``, ``reference`` ...) of the env's prompt set, found by the prompt's token
    ids in the observation: on a test split that is test-time information, and run tables must say so. With
    ``guide_scorer`` the scorer gets the prompt text and the completion only.
    """

    Config: ClassVar[type[AgentConfig]] = DecodingConfig
    algo_name: ClassVar[str] = "reward_guided_decoding"
    needs_reference = False
    trains = False

    def __init__(self, env: Any, config: DecodingConfig | None = None) -> None:
        super().__init__(env, config)
        self.config: DecodingConfig
        cfg = self.config
        self.sequence_level = "completion_len" in self.signature
        #: True when decoding reads the evaluation scorer / the prompt rows' context (label the run an oracle)
        self.is_oracle = cfg.guide_scorer is None
        if cfg.guide_scorer is not None:
            self.scorer: BaseScorer = make_scorer(cfg.guide_scorer, device=cfg.device)
        else:
            self.scorer = (
                self.runtime.scorer if cfg.scorer is None else make_scorer(cfg.scorer, device=cfg.device)
            )
        self._row_index = {tuple(int(t) for t in ids): i for i, ids in enumerate(self.runtime.prompt_ids)}
        self._other_rows: dict[tuple[int, ...], dict[str, Any]] | None = None  # built on the first miss
        self.pad_action = self.eos_action if self.eos_action is not None else 0

    def learn(self, total_timesteps: int, callback: Callback | None = None) -> RewardGuidedDecoder:
        """Nothing to learn: decoding-time guidance only."""
        return self

    # -- scoring ---------------------------------------------------------------------------------------------------
    def shipped_rows(self) -> dict[tuple[int, ...], dict[str, Any]]:
        """Oracle mode: the task's shipped prompt rows of every split (train and test), by prompt token ids.

        The decoder is built on the training env, but the harness evaluates it on the test split; an oracle looks a
        test prompt's context (``keywords``, ``reference``) up here. Empty for a task without a shipped prompt file.
        """
        if self._other_rows is None:
            from aligngym.envs.prompts import load_prompt_rows

            rt = self.runtime
            table: dict[tuple[int, ...], dict[str, Any]] = {}
            if rt.task.prompt_file is not None:
                rows = load_prompt_rows(rt.task, split="all")
                for row, ids in zip(rows, rt._encode_prompts([r["prompt"] for r in rows])):
                    table.setdefault(tuple(int(t) for t in ids), row)
            self._other_rows = table
        return self._other_rows

    def _rows(self, ids: torch.Tensor, mask: torch.Tensor) -> list[dict[str, Any]]:
        p = self.runtime.max_prompt_tokens
        rows = []
        for b in range(ids.shape[0]):
            prompt = tuple(int(t) for t, m in zip(ids[b, :p].tolist(), mask[b, :p].tolist()) if m)
            i = self._row_index.get(prompt)
            if i is not None:
                rows.append(self.runtime.rows[i])
            elif self.is_oracle and prompt in self.shipped_rows():
                rows.append(self.shipped_rows()[prompt])
            else:
                rows.append({"prompt": self.runtime.tokenizer.decode(prompt)})
        return rows

    def _score(self, rows: Sequence[dict[str, Any]], completions: Sequence[str]) -> np.ndarray:
        if not self.is_oracle:  # a guide scorer sees the prompt and the completion, nothing else of the row
            return self.scorer([r["prompt"] for r in rows], list(completions))
        keys = sorted({k for r in rows for k in r} - _NOT_CONTEXT)
        context = {k: [r.get(k) for r in rows] for k in keys}
        return self.scorer([r["prompt"] for r in rows], list(completions), **context)

    def bonus(
        self, rows: Sequence[dict[str, Any]], prefixes: Sequence[Sequence[int]], logits: torch.Tensor
    ) -> torch.Tensor:
        """``logits + w * bonus`` on each row's top-k candidates (others unchanged), one scorer call per step.

        :param rows: prompt rows (``prompt`` + context columns), B of them.
        :param prefixes: the completion token ids so far, B lists.
        :param logits: float (B, k_actions), invalid actions at ``-inf``.
        """
        cfg, rt = self.config, self.runtime
        if cfg.weight == 0.0:
            return logits
        k = min(cfg.candidates, logits.shape[-1])
        top = torch.topk(logits, k, dim=-1)
        cand = top.indices.cpu().numpy()
        valid = torch.isfinite(top.values).cpu().numpy()
        tokens = rt.tokens_of(cand)
        score_rows: list[dict[str, Any]] = []
        texts: list[str] = []
        for b, prefix in enumerate(prefixes):
            for j in range(k):
                score_rows.append(rows[b])
                texts.append(rt.completion_text([*prefix, int(tokens[b, j])])[0])
        if cfg.bonus == "delta":
            score_rows += list(rows)
            texts += [rt.completion_text(list(prefix))[0] for prefix in prefixes]
        scores = self._score(score_rows, texts)
        cand_scores = scores[: len(prefixes) * k].reshape(len(prefixes), k)
        if cfg.bonus == "delta":
            cand_scores = cand_scores - scores[len(prefixes) * k :, None]
        bonus = torch.as_tensor(np.where(valid, cand_scores, 0.0), dtype=logits.dtype, device=logits.device)
        return logits.scatter_add(-1, top.indices, cfg.weight * bonus)

    # -- acting ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Token env: the next action(s); sequence env: whole completions (T,) or (B, T) of action indices."""
        cfg, rt = self.config, self.runtime
        ids, mask, single = self._obs_tensors(obs)
        rows = self._rows(ids, mask)
        p = rt.max_prompt_tokens
        if self.sequence_level:
            prompt_ids, prompt_mask = self._prompt_part(ids, mask)

            def hook(step: int, logits: torch.Tensor, so_far: torch.Tensor) -> torch.Tensor:
                acts = so_far.cpu().numpy()
                prefixes = []
                for b in range(acts.shape[0]):
                    row = rt.tokens_of(acts[b]).tolist()
                    if self.eos_action is not None and self.eos_action in acts[b].tolist():
                        row = row[: acts[b].tolist().index(self.eos_action)]
                    prefixes.append(row)
                return self.bonus(rows, prefixes, logits)

            with autocast_context(self.device, cfg.mixed_precision):
                out = self.policy.sample(
                    prompt_ids,
                    prompt_mask,
                    rt.max_new_tokens,
                    temperature=cfg.temperature,
                    top_k=cfg.top_k,
                    top_p=cfg.top_p,
                    greedy=deterministic,
                    eos_action=self.eos_action,
                    pad_action=self.pad_action,
                    action_masks=self.step_masks,
                    generator=self.generator,
                    logits_hook=hook if cfg.weight != 0.0 else None,
                )
            actions = out.actions.cpu().numpy().astype(np.int64)
            return (actions[0] if single else actions), state
        with autocast_context(self.device, cfg.mixed_precision):
            logits = self.policy(ids, mask).float()
        n_gen = mask[:, p:].sum(-1)
        logits = logits.masked_fill(~self.step_masks[n_gen.clamp(max=rt.max_new_tokens - 1)], float("-inf"))
        prefixes = [ids[b, p : p + int(n_gen[b])].tolist() for b in range(ids.shape[0])]
        logits = self.bonus(rows, prefixes, logits)
        if not deterministic:
            logits = process_logits(logits, cfg.temperature, cfg.top_k, cfg.top_p)
        action = sample_actions(logits, self.generator, greedy=deterministic).cpu().numpy().astype(np.int64)
        return (action[0] if single else action), state
