"""Fluency scorer: how likely a reference causal LM finds the completion, given the prompt.

It uses the same :class:`aligngym.envs.reference.ReferenceModel` as the envs' ``ref_logprob``; prompt and completion
are tokenized separately, as an env does, and all completions of a batch run in one batched forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.envs.scorers.base import BaseScorer

MODES = ("mean_logprob", "inv_perplexity")


class FluencyScorer(BaseScorer):
    """Mean per-token log-likelihood of the completion under a reference causal LM (or 1 / perplexity).

    :param model: ``"default"`` (the shipped ``aligngym/envs/data/reference_lm``), a local causal-LM directory, a
        ``transformers`` model object, or a :class:`~aligngym.envs.reference.ReferenceModel`.
    :param tokenizer: the tokenizer the model was trained with; ``None``: the model directory's own tokenizer files
        when it has them, else the shipped default tokenizer (a ``ReferenceModel`` brings its own).
    :param mode: ``"mean_logprob"``: mean log p(token) over the completion tokens, in (-inf, 0] nats;
        ``"inv_perplexity"``: exp of that, in (0, 1] (1 / perplexity; bounded, handy in weighted composites).
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"`` (half precision on CUDA).
    :param batch_size: completions per forward pass.

    An empty completion has no tokens to average: it gets the uniform-model level log(1/V) (``1/V`` in
    ``inv_perplexity`` mode), i.e. no better than random text. Completions longer than the model's context keep
    their first ``context - 1`` tokens.
    """

    name = "fluency"

    def __init__(
        self,
        model: Any = "default",
        tokenizer: Any = None,
        mode: str = "mean_logprob",
        device: str = "auto",
        batch_size: int = 32,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model_spec = model
        self.tokenizer_spec = tokenizer
        self.mode = mode
        self.device_spec = device
        self.batch_size = int(batch_size)
        self._reference: Any = None

    @property
    def reference(self) -> Any:
        """The :class:`~aligngym.envs.reference.ReferenceModel` (loaded on first use, shared per path and device)."""
        if self._reference is None:
            from aligngym.envs.reference import ReferenceModel, default_reference_dir, load_reference_model

            spec = self.model_spec
            tok = self.tokenizer_spec
            if isinstance(spec, ReferenceModel) and tok is None:
                self._reference = spec
                return spec
            if tok is None and isinstance(spec, str | Path):
                path = default_reference_dir() if spec == "default" else Path(spec)
                if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
                    tok = path
            self._reference = load_reference_model(spec, tok, device=self.device_spec)
            self._reference.batch_size = max(self._reference.batch_size, self.batch_size)
        return self._reference

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        ref = self.reference
        tok = ref.tokenizer
        contexts = tok.encode_batch([str(p) for p in prompts])
        conts = tok.encode_batch([str(c) for c in completions])
        if ref.max_context is not None:
            conts = [c[: ref.max_context - 1] for c in conts]
        per_token = ref.token_logprobs(contexts, conts)
        floor = -math.log(ref.vocab_size)
        mean = np.array([float(t.mean()) if t.size else floor for t in per_token], dtype=np.float64)
        out = np.exp(mean) if self.mode == "inv_perplexity" else mean
        return out.astype(np.float32)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(self.model_spec, str | Path):
            state["_reference"] = None
        return state
