"""Causal-LM policies: any ``transformers`` causal LM as an aligngym actor-critic, with KV-cached batched sampling.

:class:`CausalLMPolicy` wraps an ``AutoModelForCausalLM`` (local directory, config, model object or ``"default"``, the
shipped reference model) and adds a value head on the shared trunk. It is the policy of PPO, GRPO, reward-guided
decoding and SFT, and satisfies the REINFORCE seam ``forward(input_ids, attention_mask) -> logits (B, n_actions)``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aligngym.agents.base import Agent, CheckpointError, add_batch_dim

POLICY_FILE = "policy.json"
VALUE_HEAD_FILE = "value_head.safetensors"
#: ``hook(step, logits (B, k) float32, actions_so_far LongTensor (B, step)) -> logits`` applied before sampling
LogitsHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def default_reference_dir() -> Path:
    """Directory of the shipped reference model (``aligngym/envs/data/reference_lm``)."""
    from aligngym.envs.tasks import data_path

    return data_path("reference_lm")


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
    :param seed: seeds the initial weights (torch's global generator is left as it was).
    :param eos_token_id: / :param pad_token_id: recorded in the config (default: V - 1, inside the vocabulary).
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


def load_causal_lm(spec: Any = "default") -> nn.Module:
    """A ``transformers`` causal LM from ``"default"``, a local directory, a ``PretrainedConfig`` or a model object.

    Directories load with ``AutoModelForCausalLM.from_pretrained(dir, local_files_only=True)``; nothing is downloaded
    and ``trust_remote_code`` is never set. Model objects are returned as they are (not copied).

    :raises FileNotFoundError: for a string that is not a local model directory.
    :raises TypeError: for anything else.
    """
    from transformers import AutoModelForCausalLM, PretrainedConfig

    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, PretrainedConfig):
        return AutoModelForCausalLM.from_config(spec, trust_remote_code=False)
    if isinstance(spec, str | Path):
        path = default_reference_dir() if str(spec) == "default" else Path(spec)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"causal LM {str(spec)!r} is not a local model directory ({path} has no config.json); aligngym "
                "never downloads: pass a directory saved with save_pretrained, a config, a model or 'default'"
            )
        from aligngym.envs.hf import quiet_transformers

        with quiet_transformers():  # no weight-loading progress bar
            model = AutoModelForCausalLM.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False, dtype=torch.float32
            )
        return model.eval()
    raise TypeError(
        f"causal LM must be 'default', a local directory, a transformers PretrainedConfig or model; got "
        f"{type(spec).__name__}"
    )


def model_vocab_size(model: Any) -> int:
    """Rows of the model's output layer (``config.vocab_size`` when it has no output embeddings)."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None and hasattr(out, "weight"):
        return int(out.weight.shape[0])
    return int(model.config.vocab_size)


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


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, L) counting attended tokens only, so left padding does not shift positions."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def process_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering; filtered entries become ``-inf``.

    :param logits: float (B, k).
    :returns: float (B, k) (a new tensor).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive (use greedy=True for argmax), got {temperature}")
    out = logits / temperature if temperature != 1.0 else logits.clone()
    if top_k and top_k < out.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p < 1.0:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        sorted_logits, order = torch.sort(out, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop_sorted = (
            cum - torch.softmax(sorted_logits, dim=-1)
        ) >= top_p  # keep the token that crosses top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def sample_actions(
    logits: torch.Tensor, generator: torch.Generator | None = None, greedy: bool = False
) -> torch.Tensor:
    """Draw one action per row from (already processed) logits float (B, k); argmax when ``greedy``."""
    if greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclasses.dataclass
class DecodeState:
    """Where a KV-cached decode stands: the next-token logits (B, k) float32, values (B,), cache and mask (B, t)."""

    logits: torch.Tensor
    values: torch.Tensor | None
    past: Any
    attention_mask: torch.Tensor
    next_position: torch.Tensor


@dataclasses.dataclass
class Completion:
    """Output of :meth:`CausalLMPolicy.sample`.

    ``actions``/``tokens``: LongTensor (B, T) action indices / token ids (``pad_action`` / pad id after the end);
    ``mask``: (B, T) 1 for generated positions (the EOS included); ``lengths``: (B,); ``logprobs``: float (B, T) of
    the sampled actions under the processed distribution (0 after the end).
    """

    actions: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    logprobs: torch.Tensor


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
        runtime = env_runtime(env)
        return cls(model, tokenizer=runtime.tokenizer, action_ids=runtime.action_ids, value_head=value_head)

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
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past,
            use_cache=use_cache,
            output_hidden_states=True,
            logits_to_keep=logits_to_keep,
        )
        return out.logits, out.hidden_states[-1], out.past_key_values

    def _value(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.value_head is None:
            raise RuntimeError("this CausalLMPolicy was built with value_head=False")
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()

    @staticmethod
    def _check_pair(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be (B, L), got {tuple(input_ids.shape)} and "
                f"{tuple(attention_mask.shape)}"
            )
        if input_ids.dtype != torch.long:
            raise TypeError(f"input_ids must be a LongTensor (token ids), got {input_ids.dtype}")

    def forward_with_value(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token logits (B, n_actions) float32 after each row's last attended token, and its value (B,).

        Works on env observations (prompt left-padded, completion after it, padding after that).
        """
        self._check_pair(input_ids, attention_mask)
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

        :param prompt_ids: LongTensor (B, P), left-padded prompts; :param prompt_mask: (B, P).
        :param actions: LongTensor (B, T) action indices of the completions (anything where the mask is 0).
        :param completion_mask: (B, T), 1 for completion tokens.
        :returns: logits float32 (B, T, n_actions) for step t given prompt + actions[:, :t], and values (B, T)
            of the same states when ``with_values``.
        """
        self._check_pair(prompt_ids, prompt_mask)
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
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per-token log-probs of given completions in one forward pass.

        :param action_masks: bool (T, k) or (B, T, k) valid actions per step (invalid ones get probability 0).
        :returns: ``(logprobs (B, T), values (B, T) or None, entropy (B, T))``, float32, 0 where the mask is 0.
        """
        logits, values = self.completion_logits(
            prompt_ids, prompt_mask, actions, completion_mask, with_values
        )
        if temperature != 1.0:
            logits = logits / temperature
        if action_masks is not None:
            logits = logits.masked_fill(~action_masks.bool(), torch.finfo(logits.dtype).min)
        logp_all = torch.log_softmax(logits, dim=-1)
        logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        m = completion_mask.to(logp.dtype)
        return logp * m, (values * m if values is not None else None), entropy * m

    # -- KV-cached decoding ----------------------------------------------------------------------------------------
    def begin(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, with_values: bool = False
    ) -> DecodeState:
        """Run the (left-padded) prompts once and keep the KV cache: the first step of a decode."""
        self._check_pair(prompt_ids, prompt_mask)
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
        pos = state.next_position.clamp(max=_max_positions(self.model) - 1)[:, None]
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

        :param prompt_ids: LongTensor (B, P) left-padded prompts; :param prompt_mask: (B, P).
        :param eos_action: action index that ends a row (kept in the completion); ``None``: the budget alone.
        :param pad_action: written after a row ends (default ``eos_action`` or 0).
        :param action_masks: bool (T, k) valid actions per step (the env's ``action_mask(t)``), or ``None``.
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
        for t in range(max_new_tokens):
            logits = state.logits
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
                state = self.extend(state, a, alive)
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


def env_runtime(env: Any) -> Any:
    """Deprecated alias of :func:`aligngym.envs.core.runtime_of` that raises for a non-aligngym env."""
    from aligngym.envs.core import runtime_of

    return runtime_of(env, required_by="env_runtime")


def uses_default_tokenizer(runtime: Any) -> bool:
    """Whether an env's tokenizer is the shipped default one (so the shipped reference model fits it)."""
    from aligngym.envs.tokenization import load_tokenizer

    tok = runtime.tokenizer
    if tok.name == "aligngym-default":
        return True
    default = load_tokenizer("default")
    return tok.vocab_size == default.vocab_size and tok.backend.to_str() == default.backend.to_str()


def default_policy_model(runtime: Any, seed: int = 0) -> nn.Module:
    """The shipped reference model when the env uses the default tokenizer, else a :func:`tiny_causal_lm`."""
    if uses_default_tokenizer(runtime) and (default_reference_dir() / "config.json").is_file():
        model = load_causal_lm("default")
        model._aligngym_default = True  # type: ignore[assignment]
        return model
    tok = runtime.tokenizer
    return tiny_causal_lm(tok.vocab_size, seed=seed, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)


def resolve_policy(spec: Any, env: Any, value_head: bool, seed: int = 0) -> CausalLMPolicy:
    """The policy an agent acts with in ``env``: its tokenizer checked and its ``action_vocab`` applied.

    :param spec: ``None`` (the shipped reference model when the env uses the default tokenizer, else a
        :func:`tiny_causal_lm`), ``"default"``, a local directory, a ``PretrainedConfig``, a ``transformers`` model or a
        :class:`CausalLMPolicy` (used as is after the checks; a value head is added when missing and needed).
    :raises ValueError: on a vocabulary or action-vocabulary mismatch.
    """
    runtime = env_runtime(env)
    if isinstance(spec, CausalLMPolicy):
        check_vocab(spec.model, runtime.tokenizer)
        want = None if runtime.action_ids is None else np.asarray(runtime.action_ids).tolist()
        have = None if spec.action_ids is None else spec.action_ids.cpu().tolist()
        if want != have:
            raise ValueError(
                f"the policy acts on token ids {have if have is not None else 'all'} but the env's actions are "
                f"{want if want is not None else 'all token ids'}; build it with CausalLMPolicy.for_env(env, model)"
            )
        if value_head and spec.value_head is None:
            hidden = int(getattr(spec.model.config, "hidden_size", 0) or spec.model.config.n_embd)
            spec.value_head = nn.Linear(hidden, 1).to(spec.device)
        return spec
    model = default_policy_model(runtime, seed) if spec is None else load_causal_lm(spec)
    policy = CausalLMPolicy(
        model, tokenizer=runtime.tokenizer, action_ids=runtime.action_ids, value_head=value_head
    )
    if spec is None and getattr(model, "_aligngym_default", False):
        policy.source = "default"
    return policy


def spec_label(spec: Any) -> Any:
    """What a checkpoint records of a model spec: strings and ``None`` as they are, objects as ``"object"``."""
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, Path):
        return str(spec)
    return "object"


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    """The ``transformers`` config of a model as a JSON-able dict (to rebuild the architecture from a checkpoint)."""
    return model.config.to_dict()  # type: ignore[union-attr,operator]


def model_from_config_dict(config: dict[str, Any]) -> nn.Module:
    """An untrained model of the architecture :func:`model_config_dict` recorded (weights come from the checkpoint)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(config)
    model_type = cfg.pop("model_type")
    return AutoModelForCausalLM.from_config(
        AutoConfig.for_model(model_type, **cfg), trust_remote_code=False
    ).eval()


def autocast_context(device: str, enabled: bool) -> Any:
    """bfloat16 autocast on CUDA when ``enabled`` (float16 where bfloat16 is unsupported); a no-op elsewhere."""
    import contextlib

    if not enabled or not str(device).startswith("cuda"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def freeze_reference(model: nn.Module, device: str) -> nn.Module:
    """A frozen reference LM: eval mode, no gradients, half precision on CUDA."""
    model = model.eval().to(device)
    if str(device).startswith("cuda"):
        model = model.to(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# -- shared machinery of the LM agents (PPO, GRPO, reward-guided decoding) --------------------------------------------
def _returning(env: Any) -> Callable[[], Any]:
    return lambda: env


def as_vector_env(env: Any, num_envs: int) -> Any:
    """``env`` if it is a Gymnasium ``VectorEnv``, else a ``SyncVectorEnv`` of ``num_envs`` copies of it."""
    import copy

    import gymnasium as gym

    if isinstance(env, gym.vector.VectorEnv):
        return env
    copies = [env] + [copy.deepcopy(env) for _ in range(num_envs - 1)]
    return gym.vector.SyncVectorEnv([_returning(e) for e in copies])


def autoreset_mode(venv: Any) -> str:
    """The vector env's autoreset mode as a string (``"NextStep"``, ``"SameStep"``, ``"Disabled"``, or another)."""
    mode = venv.metadata.get("autoreset_mode", "NextStep")
    return str(getattr(mode, "value", mode))


def info_value(info: dict[str, Any], key: str, i: int, mode: str) -> Any:
    """``info[key][i]`` of a vector env's step (or its ``final_info`` under SAME_STEP autoreset), else ``None``."""
    src = info.get("final_info", info) if mode == "SameStep" else info
    if not isinstance(src, dict) or key not in src:
        return None
    present = src.get(f"_{key}")
    if present is not None and not bool(np.asarray(present)[i]):
        return None
    return src[key][i]


def step_action_masks(runtime: Any, device: Any = "cpu") -> torch.Tensor:
    """Valid actions of each completion step, bool (max_new_tokens, n_actions), from ``runtime.action_mask(t)``."""
    masks = np.stack([runtime.action_mask(t) for t in range(runtime.max_new_tokens)])
    return torch.as_tensor(masks, dtype=torch.bool, device=device)


def eos_action_of(runtime: Any) -> int | None:
    """The action index of the EOS token, or ``None`` when the env's actions cannot end a completion."""
    if runtime.eos_id is None:
        return None
    if runtime.action_ids is None:
        return int(runtime.eos_id)
    hits = np.flatnonzero(np.asarray(runtime.action_ids) == runtime.eos_id)
    return int(hits[0]) if hits.size else None


@dataclasses.dataclass
class LMAgentConfig:
    """Mixin fields of the LM agents' configs (see :class:`LMAgent`).

    :param policy: ``None`` (shipped reference model with the default tokenizer, else a tiny GPT-2), ``"default"``, a
        local directory, a ``PretrainedConfig``, a ``transformers`` causal LM or a :class:`CausalLMPolicy`.
    :param reference: the frozen KL reference: ``None`` (the policy's initial weights), or a spec as ``policy``.
    :param mixed_precision: bfloat16 autocast on CUDA (ignored on CPU).
    """

    policy: Any = None
    reference: Any = None
    mixed_precision: bool = True


class LMAgent(Agent):
    config: Any
    """Base of the causal-LM agents: builds the policy (and frozen reference), saves and restores them exactly.

    Checkpoints hold ``policy.*`` (LM + value head), ``ref.*`` (only when the reference is not a path spec),
    ``optim.<i>.<key>`` (Adam state) and ``rng.sample`` (the sampling generator); the agent's numpy generator is
    saved by :class:`~aligngym.agents.base.Agent`. Models given as objects are rebuilt from their recorded
    ``transformers`` config on :meth:`load`. No pickle anywhere.
    """

    needs_value: bool = False
    needs_reference: bool = True
    trains: bool = True

    def __init__(self, env: Any, config: Any = None) -> None:
        super().__init__(env, config)
        cfg = self.config
        self.runtime = env_runtime(env)
        self.policy = resolve_policy(cfg.policy, env, value_head=self.needs_value, seed=cfg.seed).to(
            self.device
        )
        self.policy.eval()  # no dropout in RL updates (as in TRL); gradients still flow
        self.reference: CausalLMPolicy | None = None
        self._reference_is_spec = False
        if self.needs_reference:
            ref_spec = cfg.reference
            if ref_spec is None and isinstance(cfg.policy, str | Path):
                ref_spec = cfg.policy  # load a second, frozen copy of the same weights
            elif ref_spec is None and cfg.policy is None and self.policy.source == "default":
                ref_spec = "default"
            if isinstance(ref_spec, str | Path):
                ref_model = load_causal_lm(ref_spec)
                self._reference_is_spec = True
            elif ref_spec is None:
                import copy

                ref_model = copy.deepcopy(
                    self.policy.model
                )  # the policy's initial weights, saved with the agent
            else:
                ref_model = (
                    ref_spec.model if isinstance(ref_spec, CausalLMPolicy) else load_causal_lm(ref_spec)
                )
            ref_model = freeze_reference(ref_model, self.device)
            self.reference = CausalLMPolicy(
                ref_model,
                tokenizer=self.runtime.tokenizer,
                action_ids=self.runtime.action_ids,
                value_head=False,
            )
        self.optimizer: torch.optim.Optimizer | None = None
        if self.trains:
            self.optimizer = torch.optim.Adam(
                [p for p in self.policy.parameters() if p.requires_grad], lr=cfg.learning_rate, eps=1e-5
            )
        self.generator = torch.Generator(device=self.device).manual_seed(int(cfg.seed))
        self.step_masks = step_action_masks(self.runtime, self.device)
        self.eos_action = eos_action_of(self.runtime)
        self.num_updates = 0

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def save(self, path: Any) -> Any:
        """As :meth:`Agent.save`; models given as objects are recorded as ``"object"`` plus their config."""
        cfg = self.config
        self.config = dataclasses.replace(
            cfg, policy=spec_label(cfg.policy), reference=spec_label(cfg.reference)
        )
        try:
            return super().save(path)
        finally:
            self.config = cfg

    @classmethod
    def _from_checkpoint(cls, env: Any, config: Any, meta: dict[str, Any]) -> Any:
        if env is None:
            raise CheckpointError(f"{cls.__name__}.load needs env= to rebuild the agent")
        extra = meta.get("extra", {})
        changes: dict[str, Any] = {}
        if config.policy == "object":
            changes["policy"] = model_from_config_dict(extra["policy_model_config"])
        if config.reference == "object":
            changes["reference"] = model_from_config_dict(extra["reference_model_config"])
        return cls(env, dataclasses.replace(config, **changes) if changes else config)

    def state_arrays(self) -> dict[str, Any]:
        arrays: dict[str, Any] = {f"policy.{k}": v for k, v in self.policy.state_dict().items()}
        if self.reference is not None and not self._reference_is_spec:
            arrays.update({f"ref.{k}": v for k, v in self.reference.state_dict().items()})
        if self.optimizer is not None:
            for idx, st in self.optimizer.state_dict()["state"].items():
                for key, value in st.items():
                    arrays[f"optim.{idx}.{key}"] = (
                        torch.as_tensor(value).reshape(-1) if key == "step" else value
                    )
        arrays["rng.sample"] = self.generator.get_state()
        return arrays

    def load_state_arrays(self, arrays: dict[str, Any]) -> None:
        def part(prefix: str) -> dict[str, Any]:
            return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}

        for prefix, module in (("policy.", self.policy), ("ref.", self.reference)):
            sd = part(prefix)
            if module is None or (prefix == "ref." and not sd):
                continue
            try:
                module.load_state_dict({k: v.to(module.device) for k, v in sd.items()})
            except RuntimeError as err:
                raise CheckpointError(f"checkpoint {prefix}* weights do not fit the model: {err}") from err
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in part("optim.").items():
            idx, key = k.split(".", 1)
            state.setdefault(int(idx), {})[key] = v.reshape(()) if key == "step" else v
        if state and self.optimizer is not None:
            groups = self.optimizer.state_dict()["param_groups"]
            try:
                self.optimizer.load_state_dict({"state": state, "param_groups": groups})
            except (ValueError, KeyError, RuntimeError) as err:
                raise CheckpointError(f"checkpoint optimizer state does not fit the policy: {err}") from err
        if "rng.sample" in arrays:
            self.generator.set_state(arrays["rng.sample"].cpu())

    def extra_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "num_updates": self.num_updates,
            "policy_model_config": model_config_dict(self.policy.model),
        }
        if self.reference is not None:
            out["reference_model_config"] = model_config_dict(self.reference.model)
        return out

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        self.num_updates = int(extra.get("num_updates", 0))

    # -- acting ----------------------------------------------------------------------------------------------------
    def _obs_tensors(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
        batch, single = add_batch_dim(obs)
        ids = torch.as_tensor(batch["input_ids"], device=self.device)
        mask = torch.as_tensor(batch["attention_mask"], device=self.device)
        return ids, mask, single

    def _prompt_part(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.runtime.max_prompt_tokens
        return ids[:, :p], mask[:, :p]
