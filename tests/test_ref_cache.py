"""KV-cached reference log-probs: equal to the uncached values (single env, vector env, rows at different positions,
resets), one token fed per step, and the cache cleared with the episode."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.envs.hf import cache_kwarg
from aligngym.envs.reference import ReferenceKVCache, ReferenceModel
from aligngym.envs.tokenization import load_tokenizer


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ref() -> ReferenceModel:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = load_tokenizer("default")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    return ReferenceModel(GPT2LMHeadModel(config).eval(), tok, device="cpu")


class CountingModel(torch.nn.Module):
    """Wraps a causal LM and records the input width of every forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config
        self.widths: list[int] = []

    def forward(self, cache: Any = None, **kwargs: Any) -> Any:
        self.widths.append(int(kwargs["input_ids"].shape[1]))
        return self.inner(**(cache_kwarg(self.inner, cache) if cache is not None else {}), **kwargs)


def _rows(rng: np.random.Generator, n: int, prompt_slot: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for i in range(n):
        k = int(rng.integers(1, prompt_slot + 1))
        ids[i, prompt_slot - k : prompt_slot] = rng.integers(5, 2000, k)
        mask[i, prompt_slot - k : prompt_slot] = 1
    return ids, mask


def test_cached_equals_uncached_for_rows_at_different_positions_with_resets(ref: ReferenceModel) -> None:
    rng = np.random.default_rng(0)
    n, p, t = 6, 10, 8
    ids, mask = _rows(rng, n, p, p + t)
    cache = ReferenceKVCache(n, p + t)
    gen = np.zeros(n, dtype=np.int64)
    for _ in range(40):
        idx = np.flatnonzero(rng.random(n) < 0.6)
        if idx.size == 0:
            continue
        expected = ref.next_token_logprobs(ids[idx], mask[idx])
        got = ref.next_token_logprobs(ids[idx], mask[idx], cache=cache, rows=idx)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-5)
        tok = rng.integers(5, 2000, idx.size)
        picked = ref.next_token_logprobs(ids[idx], mask[idx], cache=cache, rows=idx, tokens=tok)
        np.testing.assert_allclose(picked, expected[np.arange(idx.size), tok], atol=1e-4, rtol=1e-5)
        for j, i in enumerate(idx.tolist()):
            if gen[i] == t:  # a new episode in this row
                new_ids, new_mask = _rows(rng, 1, p, p + t)
                ids[i], mask[i], gen[i] = new_ids[0], new_mask[0], 0
                cache.clear([i])
            else:
                ids[i, p + gen[i]], mask[i, p + gen[i]] = tok[j], 1
                gen[i] += 1


def test_a_row_whose_tokens_changed_is_recomputed_even_without_clear(ref: ReferenceModel) -> None:
    rng = np.random.default_rng(1)
    ids, mask = _rows(rng, 2, 6, 10)
    cache = ReferenceKVCache(2, 10)
    ref.next_token_logprobs(ids, mask, cache=cache)
    ids[0, 5] = (ids[0, 5] + 1) % 2000  # same length, another last prompt token
    np.testing.assert_allclose(
        ref.next_token_logprobs(ids, mask, cache=cache), ref.next_token_logprobs(ids, mask), atol=1e-4
    )


def test_each_step_feeds_one_token(ref: ReferenceModel) -> None:
    counting = CountingModel(ref.model)
    cref = ReferenceModel(counting, ref.tokenizer, device="cpu")
    rng = np.random.default_rng(2)
    p, t = 8, 12
    ids, mask = _rows(rng, 4, p, p + t)
    cache = ReferenceKVCache(4, p + t)
    for s in range(t):
        cref.next_token_logprobs(ids, mask, cache=cache)
        ids[:, p + s], mask[:, p + s] = rng.integers(5, 2000, 4), 1
    assert counting.widths[0] == p and counting.widths[1:] == [1] * (t - 1)


def test_cache_errors_and_pickle(ref: ReferenceModel) -> None:
    rng = np.random.default_rng(3)
    ids, mask = _rows(rng, 2, 4, 8)
    cache = ReferenceKVCache(2, 8)
    with pytest.raises(ValueError, match="holds rows of 8 columns"):
        ref.next_token_logprobs(ids[:, :6], mask[:, :6], cache=cache)
    with pytest.raises(ValueError, match="distinct"):
        ref.next_token_logprobs(ids, mask, cache=cache, rows=[1, 1])
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        ref.next_token_logprobs(ids, mask, cache=cache, rows=[0, 2])
    with pytest.raises(ValueError, match="no attended tokens"):
        ref.next_token_logprobs(ids, np.zeros_like(mask), cache=cache)
    with pytest.raises(ValueError, match="num_rows and width"):
        ReferenceKVCache(0, 8)
    ref.next_token_logprobs(ids, mask, cache=cache)
    copy = pickle.loads(pickle.dumps(cache))
    assert copy._keys == [] and not copy._fed.any()
    np.testing.assert_allclose(
        ref.next_token_logprobs(ids, mask, cache=copy), ref.next_token_logprobs(ids, mask), atol=1e-4
    )


def test_token_env_ref_logprob_is_cached_and_equals_the_uncached_value(ref: ReferenceModel) -> None:
    env: Any = gym.make(
        "aligngym/Sentiment-Token-v0", reference_model=ref, ref_logprob_coef=0.1, max_new_tokens=6
    )
    rng = np.random.default_rng(4)
    for seed in (0, 1):  # two episodes: the cache is cleared on reset
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            action = int(rng.integers(10, env.action_space.n))
            expected = ref.next_token_logprobs(obs["input_ids"][None], obs["attention_mask"][None])[0, action]
            obs, _, done, _, info = env.step(action)
            assert info["ref_logprob"] == pytest.approx(float(expected), abs=1e-4)
    assert env.unwrapped._ref_cache._keys  # the cache was used


def test_vector_env_rows_keep_their_own_cache_across_autoresets(ref: ReferenceModel) -> None:
    from transformers import GPT2LMHeadModel

    n = 5
    venv: Any = gym.make_vec(
        "aligngym/Sentiment-Token-v0", num_envs=n, reference_model=ref, ref_logprob_coef=0.1, max_new_tokens=4
    )
    # an uncached twin: same weights, a fresh ReferenceModel whose cache we never pass
    twin = ReferenceModel(GPT2LMHeadModel(ref.model.config).eval(), ref.tokenizer, device="cpu")
    twin.model.load_state_dict(ref.model.state_dict())
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(5)
    eos = venv.unwrapped.runtime.eos_id
    for _ in range(14):  # rows end at different steps (EOS) and restart (NEXT_STEP autoreset)
        actions = rng.integers(10, venv.single_action_space.n, n)
        actions[rng.random(n) < 0.2] = eos
        live = venv.unwrapped._ended == 0  # rows that step (not the autoresetting ones)
        idx = np.flatnonzero(live)
        expected = twin.next_token_logprobs(obs["input_ids"][idx], obs["attention_mask"][idx])
        obs, _, _, _, infos = venv.step(actions)
        np.testing.assert_allclose(
            infos["ref_logprob"][idx], expected[np.arange(idx.size), actions[idx]], atol=1e-4
        )
