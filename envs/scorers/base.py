"""The scorer protocol, the base class every scorer derives from, composites and the scorer registry.

A scorer is a batched callable ``(prompts, completions, **context) -> float32 (B,)``; ``context`` carries per-prompt
columns of the prompt set (``keywords``, ``reference``, ``target`` ...) as lists of length B. Output is validated
here, once, so that NaN, inf, a wrong shape or a non-numeric dtype raises :class:`ScorerError` naming the scorer.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from aligngym.envs.cache import LRUCache


class ScorerError(ValueError):
    """A scorer raised, or returned something that is not one finite number per completion."""


@runtime_checkable
class Scorer(Protocol):
    """What an env needs from a reward function: a name and a batched call returning float32 (B,)."""

    name: str

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray: ...


def validate_scores(name: str, values: Any, n: int) -> np.ndarray:
    """Check a scorer's output and return it as a float32 array of shape ``(n,)``.

    :raises ScorerError: for a non-numeric dtype, a wrong shape or length, NaN or inf.
    """
    if values is None:
        raise ScorerError(f"scorer {name!r} returned None; expected {n} scores")
    try:
        arr = np.asarray(values)
    except Exception as err:  # ragged lists and the like
        raise ScorerError(
            f"scorer {name!r} returned something that is not an array of scores: {err}"
        ) from err
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ScorerError(f"scorer {name!r} returned dtype {arr.dtype}; expected numbers (float32)")
    if arr.shape != (n,):
        raise ScorerError(
            f"scorer {name!r} returned shape {arr.shape}; expected ({n},), one score per completion"
        )
    arr = arr.astype(np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ScorerError(
            f"scorer {name!r} returned non-finite scores {arr[bad].tolist()} at rows {np.flatnonzero(bad).tolist()}"
        )
    return arr


def _as_text(item: Any) -> str:
    """Text of a TRL prompt/completion, which may be a string or a list of chat messages."""
    if isinstance(item, str):
        return item
    if isinstance(item, Sequence) and item and isinstance(item[-1], Mapping):
        return str(item[-1].get("content", ""))
    raise TypeError(f"expected a string or a list of chat messages, got {type(item).__name__}")


#: keyword arguments TRL passes to reward functions that are not dataset columns
_TRL_INTERNAL = {"completion_ids", "trainer_state", "log_extra", "log_metric", "environments", "prompt_ids"}


class TRLRewardFunction:
    """A scorer as a TRL reward function: ``f(prompts=..., completions=..., **columns) -> list[float]``.

    A class, not a closure, so it pickles. Dataset columns TRL passes as keyword arguments become the scorer's
    context; TRL's own arguments (``trainer_state``, ``completion_ids``, ...) are dropped.
    """

    def __init__(self, scorer: BaseScorer) -> None:
        self.scorer = scorer
        self.__name__ = scorer.name

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        context = {k: v for k, v in kwargs.items() if k not in _TRL_INTERNAL}
        scores = self.scorer([_as_text(p) for p in prompts], [_as_text(c) for c in completions], **context)
        return [float(s) for s in scores]


class BaseScorer:
    """Base class of every aligngym scorer.

    Subclasses set ``name`` and implement :meth:`score`; calling the scorer validates the output. ``requires``
    names the context columns the scorer cannot do without (checked with a clear error).
    """

    name: str = "scorer"
    requires: tuple[str, ...] = ()

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Any:
        raise NotImplementedError

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"scorer {self.name!r}: got {len(prompts)} prompts but {n} completions")
        for key in self.requires:
            if key not in context or context[key] is None:
                raise ValueError(
                    f"scorer {self.name!r} needs the context column {key!r} (a per-prompt field of the prompt set)"
                )
        try:
            out = self.score(prompts, completions, **context)
        except ScorerError:
            raise
        except Exception as err:
            raise ScorerError(f"scorer {self.name!r} raised {type(err).__name__}: {err}") from err
        return validate_scores(self.name, out, n)

    def score_with_components(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Any
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Total score and the per-component scores (one component, named ``self.name``, unless composite)."""
        total = self(prompts, completions, **context)
        return total, {self.name: total}

    def as_trl_reward_func(self) -> TRLRewardFunction:
        """This scorer as a TRL reward function (see :class:`TRLRewardFunction`)."""
        return TRLRewardFunction(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class FunctionScorer(BaseScorer):
    """Wraps a user callable ``f(prompts, completions, **context)`` (or any Scorer-like object).

    Context columns are passed only if ``f`` accepts them (by name or through ``**kwargs``).
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"scorer must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__
        try:
            params = inspect.signature(fn).parameters.values()
            self._takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
            self._accepts = {p.name for p in params}
        except (TypeError, ValueError):  # builtins without a signature
            self._takes_all, self._accepts = True, set()

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Any:
        if not self._takes_all:
            context = {k: v for k, v in context.items() if k in self._accepts}
        return self.fn(list(prompts), list(completions), **context)


class CompositeScorer(BaseScorer):
    """Weighted sum of scorers; each component's value is reported separately in ``info["reward_components"]``.

    :param weights: mapping of scorer (name, spec or object) to weight.
    """

    def __init__(self, weights: Mapping[Any, float], device: str = "auto") -> None:
        if not weights:
            raise ValueError("a composite scorer needs at least one component")
        self.scorers: list[BaseScorer] = []
        self.weights: list[float] = []
        names: list[str] = []
        for spec, w in weights.items():
            if not isinstance(w, int | float) or not np.isfinite(w):
                raise ValueError(f"composite weight for {spec!r} must be a finite number, got {w!r}")
            sc = make_scorer(spec, device=device)
            name = sc.name
            k = 2
            while name in names:
                name, k = f"{sc.name}_{k}", k + 1
            names.append(name)
            self.scorers.append(sc)
            self.weights.append(float(w))
        self.component_names = names
        self.name = "+".join(f"{w:g}*{n}" for n, w in zip(names, self.weights))

    def score_with_components(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Any
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        comps = {n: sc(prompts, completions, **context) for n, sc in zip(self.component_names, self.scorers)}
        total = np.zeros(len(completions), dtype=np.float32)
        for n, w in zip(self.component_names, self.weights):
            total += np.float32(w) * comps[n]
        return validate_scores(self.name, total, len(completions)), comps

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Any:
        return self.score_with_components(prompts, completions, **context)[0]


# -- registry -------------------------------------------------------------------------------------------------------
#: name -> factory, or "module:attribute" resolved on first use (keeps ``import aligngym.envs`` light)
_REGISTRY: dict[str, Callable[..., BaseScorer] | str] = {}
#: (name, device, repr of kwargs) -> scorer; bounded LRU (``aligngym.envs.cache.set_cache_size`` /
#: ``ALIGNGYM_CACHE_SIZE``, default 8): an evicted scorer lives on in the envs that hold it
_CACHE: LRUCache[BaseScorer] = LRUCache("scorers")


def register_scorer(name: str, factory: Callable[..., BaseScorer] | str, *, overwrite: bool = False) -> None:
    """Register a scorer factory under ``name`` (a class, a function returning a scorer, or ``"module:attr"``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"scorer name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite and _REGISTRY[name] != factory:
        raise ValueError(f"scorer {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = factory
    _CACHE.discard(lambda k: isinstance(k, tuple) and k[0] == name)


def list_scorers() -> list[str]:
    """Names accepted by :func:`make_scorer`."""
    return sorted(_REGISTRY)


def _factory(name: str) -> Callable[..., BaseScorer]:
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown scorer {name!r}; registered scorers: {', '.join(list_scorers())}"
        ) from None
    if isinstance(entry, str):
        module, attr = entry.split(":")
        entry = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = entry
    return entry


def make_scorer(spec: Any, device: str = "auto", **kwargs: Any) -> BaseScorer:
    """Build a scorer from a name, a ``{name: weight}`` dict, a scorer object or a plain callable.

    Scorers made from a name are cached by (name, device, kwargs) so that many envs share one model; the cache is
    a bounded LRU (:mod:`aligngym.envs.cache`: 8 entries unless ``ALIGNGYM_CACHE_SIZE`` or ``set_cache_size`` says
    otherwise).

    :param spec: ``"sentiment"``; ``{"sentiment": 1.0, "fluency": 0.2}``; a :class:`BaseScorer`; a callable
        ``f(prompts, completions, **context)``.
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda"``; passed to scorers whose factory takes ``device``.
    """
    if isinstance(spec, BaseScorer):
        return spec
    if isinstance(spec, str):
        factory = _factory(spec)
        try:
            params = inspect.signature(factory).parameters
            takes_device = "device" in params or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
            )
        except (TypeError, ValueError):
            takes_device = False
        kw = dict(kwargs)
        if takes_device:
            kw["device"] = device
        key = (spec, str(device), repr(sorted(kwargs.items())))

        def build() -> BaseScorer:
            scorer = factory(**kw)
            return scorer if isinstance(scorer, BaseScorer) else FunctionScorer(scorer, name=spec)

        return _CACHE.get_or_create(key, build)
    if isinstance(spec, Mapping):
        if kwargs:
            raise TypeError(
                "keyword arguments are not accepted with a composite spec; build components first"
            )
        return CompositeScorer(spec, device=device)
    if callable(spec):
        return FunctionScorer(spec)
    raise TypeError(
        f"scorer must be a registered name, a {{name: weight}} dict, a Scorer or a callable; got {type(spec).__name__}"
    )
