"""The causal-LM agent base that PPO, GRPO and reward-guided decoding share: the policy (resolved from a spec and
checked against the env's tokenizer), the frozen KL reference, the optimizer, and exact save/restore of all three.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aligngym.agents.base import Agent, CheckpointError, add_batch_dim
from aligngym.agents.policies import CausalLMPolicy, check_context, check_vocab, tiny_causal_lm
from aligngym.agents.vector_envs import eos_action_of, step_action_masks
from aligngym.envs.core import runtime_of
from aligngym.envs.reference import default_reference_dir, load_causal_lm

#: ``policy=`` value that asks for a randomly initialised tiny GPT-2 (labelled so: ``agent.policy_label``)
TINY_RANDOM = "tiny-random"


def uses_default_tokenizer(runtime: Any) -> bool:
    """Whether an env's tokenizer is the shipped default one (so the shipped reference model fits it)."""
    from aligngym.envs.tokenization import load_tokenizer

    tok = runtime.tokenizer
    if tok.name == "aligngym-default":
        return True
    default = load_tokenizer("default")
    return tok.vocab_size == default.vocab_size and tok.backend.to_str() == default.backend.to_str()


def default_policy_model(runtime: Any, seed: int = 0) -> nn.Module:
    """The model behind ``policy=None``: the shipped reference LM, which must exist and fit the env's tokenizer.

    There is no silent fallback: ask for a random model explicitly with ``policy="tiny-random"``.

    :raises FileNotFoundError: when the shipped reference model is missing.
    :raises ValueError: when the env's tokenizer is not the shipped default one.
    """
    del seed
    root = default_reference_dir()
    if not (root / "config.json").is_file():
        raise FileNotFoundError(
            f"policy=None means the shipped reference LM, but {root} has no config.json (train it with "
            "python -m aligngym.agents.pretrain_reference); pass policy=<local model directory or model>, or "
            f"policy={TINY_RANDOM!r} for an explicitly random tiny GPT-2"
        )
    if not uses_default_tokenizer(runtime):
        tok = runtime.tokenizer
        raise ValueError(
            f"policy=None means the shipped reference LM, which was trained on the default tokenizer, but this env "
            f"uses the tokenizer {tok.name!r} ({tok.vocab_size} ids); pass a model trained on that tokenizer "
            f"(SFTTrainer), or policy={TINY_RANDOM!r} for an explicitly random tiny GPT-2"
        )
    return load_causal_lm("default")


def resolve_policy(spec: Any, env: Any, value_head: bool, seed: int = 0) -> CausalLMPolicy:
    """The policy an agent acts with in ``env``: its tokenizer checked and its ``action_vocab`` applied.

    :param spec: ``None`` or ``"default"`` (the shipped reference LM; raises when it is missing or the env's tokenizer
        is another one), ``"tiny-random"`` (a random :func:`tiny_causal_lm`, seeded with ``seed``), a local
        directory, a ``PretrainedConfig``, a ``transformers`` model or a :class:`CausalLMPolicy` (used as is after
        the checks; a value head is added when missing and needed).
    :param env: the env (single or vector) the policy acts in.
    :param value_head: whether the policy needs a value head.
    :param seed: seeds the weights of ``"tiny-random"``.
    :raises ValueError: on a vocabulary or action-vocabulary mismatch, or observations longer than the model's
        positions.
    :raises FileNotFoundError: when the shipped model is asked for and missing.
    """
    runtime = runtime_of(env, required_by="resolve_policy")
    if isinstance(spec, CausalLMPolicy):
        check_vocab(spec.model, runtime.tokenizer)
        check_context(spec.model, int(runtime.seq_len))
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
    if spec is None or (isinstance(spec, str) and spec == "default"):
        model = default_policy_model(runtime, seed)
    elif isinstance(spec, str) and spec == TINY_RANDOM:
        tok = runtime.tokenizer
        model = tiny_causal_lm(tok.vocab_size, seed=seed, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    else:
        model = load_causal_lm(spec)
    policy = CausalLMPolicy(
        model, tokenizer=runtime.tokenizer, action_ids=runtime.action_ids, value_head=value_head
    )
    check_context(policy.model, int(runtime.seq_len))
    if spec is None or (isinstance(spec, str) and spec in ("default", TINY_RANDOM)):
        policy.source = "default" if spec is None else spec
    return policy


def policy_label(spec: Any) -> str:
    """What a run's policy is, for tables: ``"default"`` (the shipped reference LM), ``"tiny-random"``, a path, or
    ``"object:<class>"`` for a model given as an object."""
    if spec is None:
        return "default"
    if isinstance(spec, str | Path):
        return str(spec)
    model = getattr(spec, "model", spec)
    return f"object:{type(model).__name__}"


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
    # transformers 4.x records this flag, and from_config would then pin eager attention instead of the default
    cfg.pop("_attn_implementation_autoset", None)
    return AutoModelForCausalLM.from_config(
        AutoConfig.for_model(model_type, **cfg), trust_remote_code=False
    ).eval()


def autocast_context(device: str, enabled: bool) -> Any:
    """bfloat16 autocast on CUDA when ``enabled`` (float16 where bfloat16 is unsupported); a no-op elsewhere."""
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


@dataclasses.dataclass
class LMAgentConfig:
    """Mixin fields of the LM agents' configs (see :class:`LMAgent`).

    :param policy: ``None`` or ``"default"`` (the shipped reference LM: the env must use the default tokenizer, and
        a missing model raises, with no silent fallback), ``"tiny-random"`` (an explicitly random tiny GPT-2, which
        labels the run: ``agent.policy_label``), a local directory, a ``PretrainedConfig``, a ``transformers``
        causal LM or a :class:`CausalLMPolicy`.
    :param reference: the frozen KL reference: ``None`` (the policy's initial weights: a second copy of a path spec,
        else a frozen copy saved with the agent), or a spec as ``policy``.
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
    ``transformers`` config on :meth:`load`. No pickle anywhere. ``policy_label`` says what the policy started
    from (``"default"``, ``"tiny-random"``, a path or ``"object:<class>"``) for run tables.
    """

    needs_value: bool = False
    needs_reference: bool = True
    trains: bool = True

    def __init__(self, env: Any, config: Any = None) -> None:
        super().__init__(env, config)
        cfg = self.config
        self.runtime = runtime_of(env, required_by=type(self).__name__)
        self.policy = resolve_policy(cfg.policy, env, value_head=self.needs_value, seed=cfg.seed).to(
            self.device
        )
        self.policy_label = policy_label(cfg.policy)
        self.policy.eval()  # no dropout in RL updates (as in TRL); gradients still flow
        self.reference: CausalLMPolicy | None = None
        self._reference_is_spec = False
        if self.needs_reference:
            ref_spec = cfg.reference
            if ref_spec is None and isinstance(cfg.policy, str | Path) and cfg.policy != TINY_RANDOM:
                ref_spec = cfg.policy  # load a second, frozen copy of the same weights
            elif ref_spec is None and cfg.policy is None:
                ref_spec = "default"
            if isinstance(ref_spec, str | Path) and ref_spec != TINY_RANDOM:
                ref_model = load_causal_lm(ref_spec)
                self._reference_is_spec = True
            elif ref_spec is None:
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
