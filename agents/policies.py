"""Token policies for the torch agents: ``forward(input_ids, attention_mask) -> next-token logits (B, n_actions)``.

:class:`CausalLMPolicy` wraps any ``transformers`` causal LM as an actor-critic (value head on the shared trunk,
KV-cached batched sampling): the policy of PPO, GRPO, REINFORCE, reward-guided decoding and SFT.
:class:`~aligngym.agents.gru_policy.GRUPolicy` (its own module, importable from here too) reads the visible tokens
with a GRU. Any ``nn.Module`` with the same ``forward`` (and optionally ``value`` / ``forward_with_value``) plugs
into :mod:`~aligngym.agents.reinforce`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aligngym.agents.gru_policy import GRUPolicy
from aligngym.agents.sampling import (
    Completion,
    DecodeState,
    LogitsHook,
    check_ids_and_mask,
    drop_finished,
    positions_from_mask,
    process_logits,
    sample_actions,
    trim_left_padding,
    used_steps,
)
from aligngym.envs.hf import cache_kwarg, output_cache
from aligngym.envs.reference import load_causal_lm, model_vocab_size

POLICY_FILE = "policy.json"
VALUE_HEAD_FILE = "value_head.safetensors"


def tiny_causal_lm(
    vocab_size: int,
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    n_positions: int = 128,
    seed: int = 0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> nn.Module:
    """A small randomly initialised GPT-2 (``GPT2LMHeadModel``) for tests and toy runs; no dropout.

    :param vocab_size: V, must be ``len(tokenizer)`` of the env it will act in.
    :param n_layer: transformer blocks.
    :param n_embd: hidden width.
    :param n_head: attention heads.
    :param n_positions: longest sequence (prompt + completion) in tokens.
    :param seed: seeds the initial weights (torch's global generator is left as it was).
    :param eos_token_id: recorded in the config (default: V - 1, inside the vocabulary).
    :param pad_token_id: recorded in the config (default: the EOS id).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    eos = vocab_size - 1 if eos_token_id is None else int(eos_token_id)
    config = GPT2Config(
        vocab_size=int(vocab_size),
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos if pad_token_id is None else int(pad_token_id),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model.eval()


def check_context(model: nn.Module, length: int, what: str = "policy") -> None:
    """Raise unless ``length`` tokens (an env's observation length) fit the model's positions.

    :raises ValueError: naming both lengths (a GPT-2 has no position ids past ``n_positions``).
    """
    limit = _max_positions(model)
    if length > limit:
        raise ValueError(
            f"{what} model has {limit} positions (n_positions) but the env's observations hold up to {length} "
            "tokens: lower the env's max_context_tokens (multi-turn) or max_prompt_tokens + max_new_tokens, or use "
            "a model with a longer context"
        )


def check_vocab(model: nn.Module, tokenizer_or_size: Any, what: str = "policy") -> int:
    """Raise unless the model's vocabulary is exactly the tokenizer's (``len(tokenizer)``); returns V.

    :raises ValueError: naming both sizes.
    """
    size = tokenizer_or_size if isinstance(tokenizer_or_size, int) else len(tokenizer_or_size)
    got = model_vocab_size(model)
    if got != size:
        name = getattr(tokenizer_or_size, "name", "the env's tokenizer")
        raise ValueError(
            f"{what} model has a vocabulary of {got} ids but the tokenizer {name!r} has {size} (len(tokenizer)); "
            "the model must be trained on the env's tokenizer (build one with tiny_causal_lm(len(tokenizer)) or "
            "train one with SFTTrainer)"
        )
    return size


class CausalLMPolicy(nn.Module):
    """A causal LM as an aligngym actor-critic: next-token logits over the env's actions and a value head.

    The value head is one linear layer on the LM's last hidden state (the same trunk: no second model copy).
    Prompts may be left-padded: position ids come from the attention mask. With ``action_ids`` (the env's
    ``action_vocab``) the logits are the LM's logits at those token ids, so the policy acts in ``Discrete(k)``.

    :param model: a ``transformers`` causal LM, or anything :func:`load_causal_lm` takes (``"default"``, a local
        directory, a ``PretrainedConfig``).
    :param tokenizer: the env's tokenizer (or its size); the model's vocabulary must equal ``len(tokenizer)``.
    :param action_ids: token ids of the env's actions (``env.unwrapped.runtime.action_ids``), or ``None``.
    :param value_head: add the value head (PPO needs it; GRPO and REINFORCE need not).
    :raises ValueError: when the vocabulary sizes differ.
    """

    model: Any  # a transformers PreTrainedModel
    #: :meth:`sample` drops rows that ended (EOS) from the KV-cached decode, so later steps run only the live
    #: rows; the samples are those of the whole batch (see :meth:`sample`)
    drop_finished_rows: bool = True

    def __init__(
        self,
        model: Any = "default",
        tokenizer: Any = None,
        action_ids: Sequence[int] | np.ndarray | None = None,
        value_head: bool = True,
    ) -> None:
        super().__init__()
        self.model = load_causal_lm(model)
        if tokenizer is None:
            from aligngym.envs.tokenization import load_tokenizer

            tokenizer = load_tokenizer("default") if model == "default" else model_vocab_size(self.model)
        self.vocab_size = check_vocab(self.model, tokenizer)
        self.source = str(model) if isinstance(model, str | Path) else None
        if action_ids is not None:
            ids = torch.as_tensor(np.asarray(action_ids, dtype=np.int64))
            if ids.ndim != 1 or len(ids) == 0 or int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size:
                raise ValueError(
                    f"action_ids must be 1-D token ids in [0, {self.vocab_size}), got {ids.tolist()}"
                )
            self.register_buffer("action_ids", ids, persistent=False)
            self.n_actions = len(ids)
        else:
            self.action_ids = None
            self.n_actions = self.vocab_size
        hidden = int(getattr(self.model.config, "hidden_size", 0) or self.model.config.n_embd)
        self.value_head: nn.Linear | None = None
        if value_head:
            self.value_head = nn.Linear(hidden, 1)
            nn.init.normal_(self.value_head.weight, std=1.0 / np.sqrt(hidden + 1))
            nn.init.zeros_(self.value_head.bias)

    @classmethod
    def for_env(cls, env: Any, model: Any = "default", value_head: bool = True) -> CausalLMPolicy:
        """A policy acting in ``env`` (single or vector): its tokenizer is checked, its ``action_vocab`` applied."""
        from aligngym.envs.core import runtime_of

        runtime = runtime_of(env, required_by="CausalLMPolicy.for_env")
        policy = cls(model, tokenizer=runtime.tokenizer, action_ids=runtime.action_ids, value_head=value_head)
        check_context(policy.model, int(runtime.seq_len))
        return policy

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """As ``nn.Module.state_dict``, with tied weights (GPT-2's lm_head = wte) as separate tensors.

        safetensors refuses tensors that share memory; a copy keeps every key so ``load_state_dict`` stays strict.
        """
        sd = super().state_dict(*args, **kwargs)
        if kwargs.get("keep_vars"):
            return sd
        seen: set[tuple[int, Any]] = set()
        for key, value in sd.items():
            if isinstance(value, torch.Tensor):
                ident = (value.untyped_storage().data_ptr(), value.storage_offset())
                if ident in seen:
                    sd[key] = value.clone()
                seen.add(ident)
        return sd

    # -- forward passes --------------------------------------------------------------------------------------------
    def _to_actions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.index_select(-1, self.action_ids) if self.action_ids is not None else logits

    def _run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        past: Any = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)
        limit = _max_positions(self.model)
        # a position id is below the mask's width (attended tokens so far), so only a mask wider than the model's
        # positions needs the (device-syncing) look at the ids
        if attention_mask.shape[1] > limit and int(position_ids.max()) >= limit:
            raise ValueError(
                f"a sequence of {int(position_ids.max()) + 1} tokens does not fit the policy model's {limit} "
                "positions (n_positions): shorten the env's context or use a model with a longer context"
            )
        out = self.model(
            **cache_kwarg(self.model, past),
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            output_hidden_states=True,
            logits_to_keep=logits_to_keep,
        )
        # a model whose forward lacks logits_to_keep (GPT-2 in transformers 4.50) returns every position
        logits = out.logits[:, -logits_to_keep:] if logits_to_keep else out.logits
        return logits, out.hidden_states[-1], output_cache(out)

    def _value(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.value_head is None:
            raise RuntimeError("this CausalLMPolicy was built with value_head=False")
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()

    def forward_with_value(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token logits (B, n_actions) float32 after each row's last attended token, and its value (B,).

        Works on env observations (prompt left-padded, completion after it, padding after that).
        """
        check_ids_and_mask(input_ids, attention_mask)
        mask = attention_mask.long()
        if bool((mask.sum(-1) == 0).any()):
            raise ValueError("every row of attention_mask needs at least one attended token")
        last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)  # last attended position
        width = int(last.max()) + 1  # nothing after the last attended token of any row matters
        logits, hidden, _ = self._run(input_ids[:, :width], mask[:, :width])
        rows = torch.arange(len(last), device=last.device)
        next_logits = self._to_actions(logits[rows, last]).float()
        values = self._value(hidden[rows, last]) if self.value_head is not None else None
        return next_logits, values

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, n_actions) float32: the REINFORCE policy seam."""
        return self.forward_with_value(input_ids, attention_mask)[0]

    def value(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Value (B,) float32 of the state after each row's last attended token."""
        values = self.forward_with_value(input_ids, attention_mask)[1]
        if values is None:
            raise RuntimeError("this CausalLMPolicy was built with value_head=False")
        return values

    def completion_logits(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        actions: torch.Tensor,
        completion_mask: torch.Tensor,
        with_values: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits over the actions at every completion step, in one forward pass.

        :param prompt_ids: LongTensor (B, P), left-padded prompts.
        :param prompt_mask: (B, P), 1 on prompt tokens.
        :param actions: LongTensor (B, T) action indices of the completions (anything where the mask is 0).
        :param completion_mask: (B, T), 1 for completion tokens.
        :returns: logits float32 (B, T, n_actions) for step t given prompt + actions[:, :t], and values (B, T)
            of the same states when ``with_values``.
        """
        check_ids_and_mask(prompt_ids, prompt_mask)
        prompt_ids, prompt_mask = trim_left_padding(prompt_ids, prompt_mask)
        t = actions.shape[1]
        tokens = self.action_ids[actions] if self.action_ids is not None else actions
        ids = torch.cat([prompt_ids, tokens.long()], dim=1)
        mask = torch.cat([prompt_mask.long(), completion_mask.long()], dim=1)
        logits, hidden, _ = self._run(ids, mask, logits_to_keep=t + 1)
        logits = self._to_actions(logits[:, :t]).float()
        values = self._value(hidden[:, -t - 1 : -1]) if with_values else None
        return logits, values

    def completion_logprobs(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        actions: torch.Tensor,
        completion_mask: torch.Tensor,
        action_masks: torch.Tensor | None = None,
        temperature: float = 1.0,
        with_values: bool = False,
        with_entropy: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Per-token log-probs of given completions in one forward pass.

        :param action_masks: bool (T, k) or (B, T, k) valid actions per step (invalid ones get probability 0).
        :param with_entropy: compute the entropy (one more pass over the (B, T, k) distribution, and its graph
            under autograd); ``False`` returns ``None`` in its place, the log-probs unchanged.
        :returns: ``(logprobs (B, T), values (B, T) or None, entropy (B, T) or None)``, float32, 0 where the mask
            is 0.

        Steps after every row's last completion token are not run (they are 0 whatever their logits).
        """
        full_t = actions.shape[1]
        t = max(used_steps(completion_mask), 1)
        if t < full_t:  # causal: dropping later steps leaves the earlier logits as they are
            actions, completion_mask = actions[:, :t], completion_mask[:, :t]
            if action_masks is not None and action_masks.dim() >= 2 and action_masks.shape[-2] == full_t:
                action_masks = action_masks[..., :t, :]
        logits, values = self.completion_logits(
            prompt_ids, prompt_mask, actions, completion_mask, with_values
        )
        if temperature != 1.0:
            logits = logits / temperature
        if action_masks is not None:
            logits = logits.masked_fill(~action_masks.bool(), torch.finfo(logits.dtype).min)
        logp_all = torch.log_softmax(logits, dim=-1)
        logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        m = completion_mask.to(logp.dtype)
        entropy = -(logp_all.exp() * logp_all).sum(-1) * m if with_entropy else None
        values = values * m if values is not None else None
        if t == full_t:
            return logp * m, values, entropy

        def widen(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else torch.nn.functional.pad(x, (0, full_t - t))

        return torch.nn.functional.pad(logp * m, (0, full_t - t)), widen(values), widen(entropy)

    # -- KV-cached decoding ----------------------------------------------------------------------------------------
    def begin(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, with_values: bool = False
    ) -> DecodeState:
        """Run the (left-padded) prompts once and keep the KV cache: the first step of a decode."""
        check_ids_and_mask(prompt_ids, prompt_mask)
        prompt_ids, prompt_mask = trim_left_padding(prompt_ids, prompt_mask)
        mask = prompt_mask.long()
        logits, hidden, past = self._run(prompt_ids, mask, use_cache=True, logits_to_keep=1)
        values = self._value(hidden[:, -1]) if with_values else None
        return DecodeState(self._to_actions(logits[:, -1]).float(), values, past, mask, mask.sum(-1))

    def extend(
        self,
        state: DecodeState,
        actions: torch.Tensor,
        alive: torch.Tensor | None = None,
        with_values: bool = False,
    ) -> DecodeState:
        """Append one action per row (rows not ``alive`` get a masked pad token) and advance the cache."""
        tokens = self.action_ids[actions] if self.action_ids is not None else actions
        step_mask = torch.ones_like(tokens) if alive is None else alive.long()
        mask = torch.cat([state.attention_mask, step_mask[:, None]], dim=1)
        pos = state.next_position[:, None]
        logits, hidden, past = self._run(
            tokens[:, None].long(), mask, position_ids=pos, past=state.past, use_cache=True
        )
        values = self._value(hidden[:, -1]) if with_values else None
        return DecodeState(
            self._to_actions(logits[:, -1]).float(), values, past, mask, state.next_position + step_mask
        )

    @torch.no_grad()
    def sample(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        greedy: bool = False,
        eos_action: int | None = None,
        pad_action: int | None = None,
        action_masks: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        logits_hook: LogitsHook | None = None,
    ) -> Completion:
        """KV-cached batched sampling: one prompt forward, then one token per step for every row.

        :param prompt_ids: LongTensor (B, P) left-padded prompts.
        :param prompt_mask: (B, P), 1 on prompt tokens.
        :param max_new_tokens: T, the completion budget.
        :param temperature: sampling temperature.
        :param top_k: top-k filtering (0: off).
        :param top_p: nucleus filtering (1: off).
        :param greedy: argmax instead of sampling.
        :param eos_action: action index that ends a row (kept in the completion); ``None``: the budget alone.
        :param pad_action: written after a row ends (default ``eos_action`` or 0).
        :param action_masks: bool (T, k) valid actions per step (the env's ``action_mask(t)``), or ``None``.
        :param generator: torch generator of the draws.
        :param logits_hook: changes the logits (B, k) before temperature/top-k/top-p (reward-guided decoding).
        """
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        b, dev = prompt_ids.shape[0], prompt_ids.device
        pad = pad_action if pad_action is not None else (eos_action if eos_action is not None else 0)
        actions = torch.full((b, max_new_tokens), pad, dtype=torch.long, device=dev)
        logprobs = torch.zeros((b, max_new_tokens), device=dev)
        mask = torch.zeros((b, max_new_tokens), dtype=torch.long, device=dev)
        alive = torch.ones(b, dtype=torch.bool, device=dev)
        state = self.begin(prompt_ids, prompt_mask)
        rows: torch.Tensor | None = None  # rows of the batch still in the decode state (None: all of them)
        full_logits = state.logits
        for t in range(max_new_tokens):
            logits = full_logits
            if action_masks is not None:
                logits = logits.masked_fill(~action_masks[t].bool(), float("-inf"))
            if logits_hook is not None:
                logits = logits_hook(t, logits, actions[:, :t])
            processed = process_logits(logits, temperature, top_k, top_p) if not greedy else logits
            a = sample_actions(processed, generator, greedy)
            a = torch.where(alive, a, torch.full_like(a, pad))
            lp = torch.log_softmax(processed, dim=-1).gather(-1, a[:, None]).squeeze(-1)
            actions[:, t] = a
            logprobs[:, t] = torch.where(alive, lp, torch.zeros_like(lp))
            mask[:, t] = alive.long()
            if eos_action is not None:
                alive = alive & (a != eos_action)
            if t + 1 < max_new_tokens and bool(alive.any()):
                if self.drop_finished_rows:
                    rows, state = drop_finished(state, rows, alive)
                if rows is None:
                    state = self.extend(state, a, alive)
                    full_logits = state.logits
                else:
                    state = self.extend(state, a[rows], alive[rows])
                    # finished rows keep stale logits: their draws are replaced by pad, and a draw takes the same
                    # random numbers whatever the logits, so the live rows sample as with the whole batch
                    full_logits = full_logits.clone()
                    full_logits[rows] = state.logits
            elif not bool(alive.any()):
                break
        tokens = self.action_ids[actions] if self.action_ids is not None else actions
        return Completion(actions, tokens, mask, mask.sum(-1), logprobs)

    # -- save / load -----------------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Write the LM (``config.json`` + ``model.safetensors``), ``value_head.safetensors`` and ``policy.json``."""
        from safetensors.torch import save_file

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out), safe_serialization=True)
        if self.value_head is not None:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                str(out / VALUE_HEAD_FILE),
            )
        meta = {
            "vocab_size": self.vocab_size,
            "action_ids": None if self.action_ids is None else self.action_ids.cpu().tolist(),
            "value_head": self.value_head is not None,
        }
        (out / POLICY_FILE).write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path, tokenizer: Any = None) -> CausalLMPolicy:
        """Load :meth:`save_pretrained`'s directory (a plain ``save_pretrained`` LM directory works too).

        :param tokenizer: checked against the saved vocabulary when given.
        """
        from safetensors.torch import load_file

        root = Path(path)
        meta_file = root / POLICY_FILE
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        has_value = bool(meta.get("value_head", (root / VALUE_HEAD_FILE).is_file()))
        policy = cls(
            str(root),
            tokenizer=tokenizer if tokenizer is not None else meta.get("vocab_size"),
            action_ids=meta.get("action_ids"),
            value_head=has_value,
        )
        if has_value and (root / VALUE_HEAD_FILE).is_file():
            assert policy.value_head is not None
            policy.value_head.load_state_dict(load_file(str(root / VALUE_HEAD_FILE)))
        return policy


def _max_positions(model: Any) -> int:
    cfg = model.config
    return int(getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 1 << 30)


__all__ = [
    "POLICY_FILE",
    "VALUE_HEAD_FILE",
    "CausalLMPolicy",
    "GRUPolicy",
    "check_context",
    "check_vocab",
    "tiny_causal_lm",
    "trim_left_padding",
    "used_steps",
]
