"""The bounded LRU cache behind every model and scorer cache: size bound, LRU order, threads, settable size,
and scorers that keep working after their cache entry was evicted."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from aligngym.envs import cache as cache_mod
from aligngym.envs.cache import DEFAULT_CACHE_SIZE, LRUCache, cache_size, set_cache_size


@pytest.fixture
def restore_size():
    old = cache_mod._size
    yield
    cache_mod._size = old
    for c in list(cache_mod._caches):
        c._shrink()


def test_size_bound_holds() -> None:
    c: LRUCache[int] = LRUCache("test", maxsize=3)
    for i in range(100):
        c[("k", i)] = i
        assert len(c) <= 3
    assert c.keys() == [("k", 97), ("k", 98), ("k", 99)] and c.evictions == 97


def test_reads_refresh_recency_and_the_oldest_goes_first() -> None:
    c: LRUCache[str] = LRUCache("test", maxsize=2)
    c["a"], c["b"] = "A", "B"
    assert c["a"] == "A"  # a is now the most recent
    c["c"] = "C"
    assert "b" not in c and c.keys() == ["a", "c"]
    assert c.get_or_create("a", lambda: "never") == "A"
    c["d"] = "D"
    assert c.keys() == ["a", "d"]


def test_get_or_create_builds_once_and_discard_drops_matching_keys() -> None:
    c: LRUCache[object] = LRUCache("test", maxsize=4)
    calls = []
    for _ in range(3):
        c.get_or_create(("x", "cpu"), lambda: calls.append(1) or object())
    assert len(calls) == 1
    c[("y", "cpu")] = 1
    assert c.discard(lambda k: k[0] == "x") == 1 and c.keys() == [("y", "cpu")]


def test_concurrent_get_or_create_builds_each_key_once_and_stays_bounded() -> None:
    c: LRUCache[int] = LRUCache("test", maxsize=5)
    built: list[int] = []
    lock = threading.Lock()

    def factory(k: int) -> int:
        with lock:
            built.append(k)
        return k * k

    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(2000):
                k = int(rng.integers(8))
                assert c.get_or_create(k, lambda k=k: factory(k)) == k * k
                assert len(c) <= 5
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(c) <= 5
    assert len(c.keys()) == len(set(c.keys()))


def test_default_size_follows_set_cache_size_and_shrinks_caches(restore_size) -> None:
    c: LRUCache[int] = LRUCache("test")
    set_cache_size(4)
    for i in range(10):
        c[i] = i
    assert len(c) == 4 and c.maxsize == cache_size() == 4
    set_cache_size(2)
    assert c.keys() == [8, 9]
    with pytest.raises(ValueError, match="positive integer.*got 0"):
        set_cache_size(0)


def test_env_var_sets_the_default(monkeypatch, restore_size) -> None:
    cache_mod._size = None
    monkeypatch.setenv("ALIGNGYM_CACHE_SIZE", "3")
    assert cache_size() == 3
    cache_mod._size = None
    monkeypatch.setenv("ALIGNGYM_CACHE_SIZE", "lots")
    with pytest.raises(ValueError, match="ALIGNGYM_CACHE_SIZE='lots'"):
        cache_size()
    cache_mod._size = None
    monkeypatch.delenv("ALIGNGYM_CACHE_SIZE")
    assert cache_size() == DEFAULT_CACHE_SIZE


def test_fixed_maxsize_is_validated() -> None:
    with pytest.raises(ValueError, match="maxsize must be a positive integer"):
        LRUCache("test", maxsize=0)


def test_make_scorer_cache_is_bounded_and_an_evicted_scorer_still_works(restore_size) -> None:
    from aligngym.envs.scorers import base

    set_cache_size(2)
    first = base.make_scorer("length", device="cpu", min_words=3)
    for t in range(4, 10):
        base.make_scorer("length", device="cpu", min_words=t)
        assert len(base._CACHE) <= 2
    assert all(k[2] != repr([("min_words", 3)]) for k in base._CACHE.keys())
    # the evicted scorer is still a working object; asking again builds a fresh one
    assert first(["p"], ["one two three"]).shape == (1,)
    again = base.make_scorer("length", device="cpu", min_words=3)
    assert again is not first
    assert float(again(["p"], ["one two three"])[0]) == float(first(["p"], ["one two three"])[0])


def test_register_scorer_drops_that_name_from_the_cache() -> None:
    from aligngym.envs.scorers import base

    base.register_scorer("cache_test_scorer", lambda: lambda p, c: [1.0] * len(c), overwrite=True)
    a = base.make_scorer("cache_test_scorer")
    assert base.make_scorer("cache_test_scorer") is a
    base.register_scorer("cache_test_scorer", lambda: lambda p, c: [2.0] * len(c), overwrite=True)
    assert base.make_scorer("cache_test_scorer")(["p"], ["c"])[0] == 2.0


def test_model_caches_use_the_lru() -> None:
    from aligngym.envs.scorers import classifier, embedding, reward_model

    for c in (embedding._ENCODERS, classifier._CLASSIFIERS, reward_model._MODELS):
        assert isinstance(c, LRUCache)


def test_an_encoder_evicted_from_the_cache_keeps_working(restore_size) -> None:
    from aligngym.envs.scorers import embedding
    from aligngym.envs.tokenization import minilm_model_dir

    try:
        model_dir = minilm_model_dir()
    except Exception as err:  # the MiniLM package is an optional extra
        pytest.skip(f"MiniLM not installed: {err}")
    enc = embedding.SentenceEncoder(model_dir, device="cpu")
    before = enc.encode(["a quiet hotel room"])
    embedding._ENCODERS.clear()  # as if evicted by other models
    after = enc.encode(["a quiet hotel room"])
    np.testing.assert_allclose(before, after, rtol=1e-6)
    assert len(embedding._ENCODERS) == 0  # the encoder kept its own reference; nothing was reloaded


def test_reference_models_share_the_bounded_cache() -> None:
    from aligngym.envs import reference
    from aligngym.envs.cache import LRUCache

    assert isinstance(reference._CACHE, LRUCache)
    first = reference.load_reference_model("default", device="cpu")
    assert reference.load_reference_model("default", device="cpu") is first
    assert len(reference._CACHE) <= reference._CACHE.maxsize
