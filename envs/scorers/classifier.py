"""Learned-classifier scorer: the probability a local ``AutoModelForSequenceClassification`` gives one label.

This is the research's "BERT classifier as reward" (e.g. P(positive) or P(non-toxic)). The loading and batched
logits helpers and :func:`format_text` here are shared with the reward-model scorer, which imports this module
(never the other way round); models are cached per (directory, device).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.envs.cache import LRUCache
from aligngym.envs.scorers.base import BaseScorer

#: (resolved directory, device) -> (model, tokenizer); bounded LRU (:func:`aligngym.envs.cache.cache_size`, default 8)
_CLASSIFIERS: LRUCache[tuple[Any, Any]] = LRUCache("classifiers")


def format_text(prompt: str, completion: str) -> str:
    """The one text a reward model reads: ``prompt + completion``.

    The two are joined by a single space unless the seam already has whitespace (``"Q: ...\\nA:"`` + ``"Wrap it"``
    -> ``"Q: ...\\nA: Wrap it"``; an env completion decoded as ``" Wrap it"`` gives the same text). Training and
    scoring both use this function.
    """
    if not prompt:
        return completion
    if not completion:
        return prompt
    if prompt[-1].isspace() or completion[0].isspace():
        return prompt + completion
    return prompt + " " + completion


def load_sequence_classifier(model_dir: str | Path, device: str) -> tuple[Any, Any]:
    """The shared, frozen ``(AutoModelForSequenceClassification, AutoTokenizer)`` of a local directory.

    Loaded with ``local_files_only=True`` and ``trust_remote_code=False``; cached per (directory, device). The
    tokenizer pads on the right and truncates on the left (the end of a completion is what gets judged).

    :param model_dir: a directory written by ``save_pretrained`` (config.json, weights, tokenizer files).
    :param device: a resolved torch device string.
    :raises FileNotFoundError: if the directory or its ``config.json`` is missing.
    """
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(model_dir)!r} is not a local model directory with config.json; aligngym never downloads"
        )
    key = (str(path.resolve()), str(device))

    def load() -> tuple[Any, Any]:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from aligngym.envs.hf import quiet_transformers

        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False
            )
            model = AutoModelForSequenceClassification.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False
            )
        prepare_classifier(model, tokenizer)
        model.eval().to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        return model, tokenizer

    return _CLASSIFIERS.get_or_create(key, load)


def prepare_classifier(model: Any, tokenizer: Any) -> None:
    """Make a (model, tokenizer) pair batchable: a pad token on both, right padding, left truncation.

    Causal-LM classifiers (GPT-2 style) read the last non-pad token, so they need ``config.pad_token_id``; a
    tokenizer without a pad token reuses its EOS token.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def classifier_logits(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    device: str,
    batch_size: int = 32,
    max_length: int = 128,
    grad: bool = False,
) -> Any:
    """Logits of a sequence classifier for texts, batched and length-sorted, back in input order.

    :param texts: B strings.
    :param grad: keep the autograd graph (training); otherwise runs under ``torch.inference_mode``.
    :return: float32 torch tensor (B, num_labels) on ``device``.
    """
    import torch

    texts = [str(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    chunks: list[Any] = []
    ctx = torch.enable_grad() if grad else torch.inference_mode()
    with ctx:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            tt = enc.get("token_type_ids")
            if tt is not None and not bool(tt.any()):
                del enc[
                    "token_type_ids"
                ]  # all zeros = the default for BERT; GPT-2 would add a wte row for them
            chunks.append(model(**enc).logits.float())
        if not chunks:
            return torch.zeros((0, int(model.config.num_labels)), device=device)
        logits = torch.cat(chunks)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.as_tensor(order)] = torch.arange(len(order))
        return logits[inverse.to(logits.device)]


class ClassifierScorer(BaseScorer):
    """Probability of one label under a local sequence classifier (softmax; sigmoid for a one-logit model).

    :param model_dir: directory of an ``AutoModelForSequenceClassification`` checkpoint (``save_pretrained``).
    :param label: the label whose probability is the score: an index, or a name from ``config.id2label``
        (case-insensitive). ``None``: index 1 for two-label models (the "positive" class by convention), the only
        logit for one-label models; required otherwise.
    :param text: what the classifier reads: ``"completion"`` or ``"prompt+completion"`` (joined as in
        :func:`aligngym.envs.scorers.reward_model.format_text`).
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``; the batch runs in one call, ``batch_size`` rows at a time.
    :param max_length: token limit per text (truncated on the left).
    """

    name = "classifier"

    def __init__(
        self,
        model_dir: str | Path,
        label: int | str | None = None,
        text: str = "completion",
        device: str = "auto",
        batch_size: int = 32,
        max_length: int = 128,
    ) -> None:
        if text not in ("completion", "prompt+completion"):
            raise ValueError(f"text must be 'completion' or 'prompt+completion', got {text!r}")
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{str(model_dir)!r} is not a local model directory with config.json; aligngym never downloads"
            )
        self.model_dir = path
        self.label_spec = label
        self.text = text
        self.device_spec = device
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self._loaded: tuple[Any, Any] | None = None
        self._device: str | None = None
        self._label: int | None = None

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from aligngym.envs.device import resolve_device

            self._device = resolve_device(self.device_spec)
            self._loaded = load_sequence_classifier(self.model_dir, self._device)
            self._label = self._resolve_label(self._loaded[0].config)
        return self._loaded

    def _resolve_label(self, config: Any) -> int:
        n = int(config.num_labels)
        spec = self.label_spec
        if spec is None:
            if n in (1, 2):
                return n - 1
            raise ValueError(
                f"the classifier has {n} labels {config.id2label}; pass label= (an index or a name)"
            )
        if isinstance(spec, str):
            names = {str(v).lower(): int(k) for k, v in config.id2label.items()}
            if spec.lower() not in names:
                raise ValueError(f"label {spec!r} is not one of the classifier's labels {sorted(names)}")
            return names[spec.lower()]
        if isinstance(spec, bool) or not isinstance(spec, int) or not 0 <= spec < n:
            raise ValueError(f"label index {spec!r} out of range for a classifier with {n} labels")
        return int(spec)

    @property
    def label_index(self) -> int:
        """Index of the scored label (loads the model)."""
        self._load()
        assert self._label is not None
        return self._label

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        import torch

        model, tokenizer = self._load()
        texts = (
            list(completions)
            if self.text == "completion"
            else [format_text(p, c) for p, c in zip(prompts, completions)]
        )
        logits = classifier_logits(
            model, tokenizer, texts, self._device or "cpu", self.batch_size, self.max_length
        )
        if logits.shape[1] == 1:
            probs = torch.sigmoid(logits[:, 0])
        else:
            probs = torch.softmax(logits, dim=-1)[:, self.label_index]
        return probs.cpu().numpy().astype(np.float32)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_loaded"] = None
        state["_device"] = None
        return state
