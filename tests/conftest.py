"""Shared test configuration: GPU tests skip without CUDA; envs that need arguments get them from ENV_KWARGS."""

from __future__ import annotations

from typing import Any

import pytest

#: kwargs that registered ids need beyond their defaults (the generic Text task takes the user's prompts + scorer)
ENV_KWARGS: dict[str, dict[str, Any]] = {
    "aligngym/Text-Token-v0": {"prompts": ["The soup was", "Our trip to the coast"], "scorer": "sentiment"},
    "aligngym/Text-Sequence-v0": {
        "prompts": ["The soup was", "Our trip to the coast"],
        "scorer": "sentiment",
    },
}


def env_kwargs(env_id: str, **extra: Any) -> dict[str, Any]:
    """Arguments for ``gym.make(env_id, ...)`` in tests: what the id needs, plus ``extra``."""
    return {**ENV_KWARGS.get(env_id, {}), **extra}


def restricted_sentiment_kwargs(candidates: tuple[str, ...], max_new_tokens: int = 4) -> dict[str, Any]:
    """A restricted-vocabulary Sentiment env: the candidates that are one token in the default tokenizer + EOS.

    Filtering keeps tests valid when the shipped tokenizer is retrained.
    """
    import gymnasium as gym

    import aligngym.envs  # noqa: F401

    tok = gym.make("aligngym/Sentiment-Token-v0").unwrapped.runtime.tokenizer
    words = []
    for w in candidates:
        try:
            tok.single_token_id(w)
        except ValueError:
            continue
        words.append(w)
    assert len(words) >= 4, f"too few single-token sentiment words in the default tokenizer: {words}"
    return {"action_vocab": [*words, "<|endoftext|>"], "max_new_tokens": max_new_tokens}


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()


def pytest_configure(config: pytest.Config) -> None:
    # Small models on a 2-core machine with 2 xdist workers: more than one intra-op thread per worker
    # oversubscribes the cores (SB3 PPO measured 152 s vs 5 s for 1000 steps under load).
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (gpu marker); none is available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
