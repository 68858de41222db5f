"""One small thread-safe bounded LRU cache, used by every process-wide model and scorer cache in aligngym.

Keys are hashable tuples such as ``(model_dir, device)``. Every cache holds at most :func:`cache_size` entries
(default :data:`DEFAULT_CACHE_SIZE`, or the ``ALIGNGYM_CACHE_SIZE`` environment variable, or :func:`set_cache_size`);
eviction only drops the cache's reference, so an env or scorer that still holds a model keeps using it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V")

#: entries per cache when neither ``ALIGNGYM_CACHE_SIZE`` nor :func:`set_cache_size` says otherwise
DEFAULT_CACHE_SIZE = 8
#: environment variable read (once, at the first use) for the default size of every cache
CACHE_SIZE_ENV = "ALIGNGYM_CACHE_SIZE"

_size: int | None = None
_caches: weakref.WeakSet[LRUCache[object]] = weakref.WeakSet()
_size_lock = threading.Lock()


def _check_size(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer (entries per cache), got {value!r}")
    return value


def cache_size() -> int:
    """The default number of entries per cache: :func:`set_cache_size`, else ``$ALIGNGYM_CACHE_SIZE``, else 8.

    :raises ValueError: if ``ALIGNGYM_CACHE_SIZE`` is set to something other than a positive integer.
    """
    global _size
    with _size_lock:
        if _size is None:
            raw = os.environ.get(CACHE_SIZE_ENV, "").strip()
            if raw:
                try:
                    value = int(raw)
                except ValueError:
                    raise ValueError(
                        f"{CACHE_SIZE_ENV}={raw!r} is not an integer; expected a positive number of entries"
                    ) from None
                _size = _check_size(value, CACHE_SIZE_ENV)
            else:
                _size = DEFAULT_CACHE_SIZE
        return _size


def set_cache_size(size: int) -> None:
    """Set the size of every cache that follows the default (all of aligngym's); shrinking evicts the oldest.

    :param size: entries per cache, >= 1.
    """
    global _size
    size = _check_size(size, "cache size")
    with _size_lock:
        _size = size
    for cache in list(_caches):
        if cache._fixed is None:
            cache._shrink()


class LRUCache(Generic[V]):
    """A thread-safe mapping bounded to ``maxsize`` entries that evicts the least recently used one.

    :param name: what the cache holds, for ``repr`` and errors (``"scorers"``, ``"encoders"``).
    :param maxsize: a fixed bound; ``None`` (default) follows :func:`cache_size`, which :func:`set_cache_size`
        changes for all such caches at once.

    Reads (:meth:`get`, ``cache[key]``, :meth:`get_or_create`) mark an entry as recently used. Eviction removes the
    cache's reference only: objects still held elsewhere live on.
    """

    def __init__(self, name: str, maxsize: int | None = None) -> None:
        self.name = name
        self._fixed = _check_size(maxsize, f"{name} cache maxsize") if maxsize is not None else None
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        #: re-entrant: a factory may build other entries of the same cache (a scorer made of scorers)
        self._lock = threading.RLock()
        self.evictions = 0
        _caches.add(self)  # type: ignore[arg-type]

    @property
    def maxsize(self) -> int:
        """The current bound (the fixed one, or :func:`cache_size`)."""
        return self._fixed if self._fixed is not None else cache_size()

    def _shrink(self) -> None:
        with self._lock:
            limit = self.maxsize
            while len(self._data) > limit:
                self._data.popitem(last=False)
                self.evictions += 1

    def get(self, key: Hashable, default: V | None = None) -> V | None:
        """The value of ``key`` (marked as recently used), or ``default``."""
        with self._lock:
            if key not in self._data:
                return default
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Hashable, value: V) -> V:
        """Store ``value`` under ``key`` as the most recent entry (evicting the oldest past the bound)."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            self._shrink()
            return value

    def get_or_create(self, key: Hashable, factory: Callable[[], V]) -> V:
        """The cached value of ``key``, or ``factory()`` stored under it (built once, under the cache's lock)."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            value = factory()
            return self.put(key, value)

    def setdefault(self, key: Hashable, value: V) -> V:
        """The value already under ``key`` (kept, marked recent), else ``value`` stored there."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            return self.put(key, value)

    def discard(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key satisfies ``predicate``; the number dropped."""
        with self._lock:
            keys = [k for k in self._data if predicate(k)]
            for k in keys:
                del self._data[k]
            return len(keys)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()

    def keys(self) -> list[Hashable]:
        """The keys, least recently used first (a snapshot)."""
        with self._lock:
            return list(self._data)

    def __getitem__(self, key: Hashable) -> V:
        with self._lock:
            value = self._data[key]
            self._data.move_to_end(key)
            return value

    def __setitem__(self, key: Hashable, value: V) -> None:
        self.put(key, value)

    def __delitem__(self, key: Hashable) -> None:
        with self._lock:
            del self._data[key]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.keys())

    def __repr__(self) -> str:
        return f"LRUCache(name={self.name!r}, entries={len(self)}, maxsize={self.maxsize})"


__all__ = ["CACHE_SIZE_ENV", "DEFAULT_CACHE_SIZE", "LRUCache", "cache_size", "set_cache_size"]
