"""Task builders: lazy, indexable lists of parameter dicts.

``grid(model=["lasso", "ridge"], alpha=[0.1, 1.0]) * bootstrap(100)`` is a
:class:`Tasks` of 400 dicts, computed on demand: a million tasks cost no memory.
A task names its bootstrap replicate or cross-validation fold; it never carries
a copy of the data. The replicate and fold objects draw their indices from the
sweep's root seed and their own number, so every model in a grid sees the same
resamples and the folds of one repeat partition the data.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable

import numpy as np

__all__ = ["Tasks", "grid", "bootstrap", "cv_folds", "Replicate", "Fold"]


class Tasks(Sequence[dict]):
    """An immutable, lazily computed sequence of task parameter dicts.

    ``a * b`` is the Cartesian product (``a`` varies slowest), ``a + b`` the
    concatenation. Plain lists of dicts combine with either.
    """

    def __init__(self, length: int, get: Callable[[int], dict], keys: frozenset[str] | None):
        self._length = length
        self._get = get
        self.keys = keys  # every task's keys, when all tasks share them

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._length))]
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"task index {i} out of range for {self._length} tasks")
        return self._get(i)

    def __iter__(self) -> Iterator[dict]:
        return map(self._get, range(self._length))

    def __mul__(self, other: Iterable[Mapping]) -> Tasks:
        other = as_tasks(other)
        clash = (self.keys or set()) & (other.keys or set())
        if clash:
            raise ValueError(f"both factors of the product define {sorted(clash)}; rename one")
        n = len(other)
        keys = self.keys | other.keys if self.keys is not None and other.keys is not None else None
        return Tasks(len(self) * n, lambda i: {**self._get(i // n), **other._get(i % n)}, keys)

    def __rmul__(self, other: Iterable[Mapping]) -> Tasks:
        return as_tasks(other) * self

    def __add__(self, other: Iterable[Mapping]) -> Tasks:
        parts = [self, as_tasks(other)]
        starts = list(itertools.accumulate(len(p) for p in parts))
        total = starts[-1]
        starts = [0, *starts[:-1]]

        def get(i: int) -> dict:
            k = bisect.bisect_right(starts, i) - 1
            return parts[k]._get(i - starts[k])

        keys = parts[0].keys if parts[0].keys == parts[1].keys else None
        return Tasks(total, get, keys)

    def __radd__(self, other: Iterable[Mapping]) -> Tasks:
        return as_tasks(other) + self

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self[:2])
        more = ", ..." if len(self) > 2 else ""
        return f"Tasks({len(self)} tasks: [{head}{more}])"


def as_tasks(tasks: Iterable[Mapping]) -> Tasks:
    """Wrap any iterable of dicts (a list, a generator) as :class:`Tasks`."""
    if isinstance(tasks, Tasks):
        return tasks
    if isinstance(tasks, Mapping):
        raise TypeError("tasks must be an iterable of dicts, not one dict; wrap it in a list: [task]")
    items = tasks if isinstance(tasks, Sequence) else list(tasks)
    for i, t in enumerate(items):
        if not isinstance(t, Mapping):
            raise TypeError(
                f"task {i} is {type(t).__name__} {t!r}, not a dict of parameters; "
                "build tasks with sweepkit.grid(...) or a list of dicts"
            )
    return Tasks(len(items), lambda i: dict(items[i]), None)


def grid(**axes: Any) -> Tasks:
    """The Cartesian product of the given axes, in nested-loop order.

    ``grid(model=["lasso", "ridge"], alpha=[0.1, 1])`` gives 4 tasks, ``alpha``
    varying fastest. A value that is not a list, tuple, range or array is a
    single-valued axis.
    """
    values = [_axis(name, v) for name, v in axes.items()]
    names = list(axes)
    sizes = [len(v) for v in values]
    total = math.prod(sizes)
    if len(names) == 1:
        (name,), (vals,) = names, values
        return Tasks(total, lambda i: {name: vals[i]}, frozenset(names))
    backwards = sizes[::-1]

    def get(i: int) -> dict:
        digits = []
        for size in backwards:  # mixed-radix digits of i, last axis fastest
            i, j = divmod(i, size)
            digits.append(j)
        digits.reverse()
        return {name: vals[j] for name, vals, j in zip(names, values, digits)}

    return Tasks(total, get, frozenset(names))


def _axis(name: str, v: Any) -> Sequence:
    if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, Iterable):
        return [v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    v = v if isinstance(v, (list, tuple, range)) else list(v)
    if len(v) == 0:
        raise ValueError(f"grid axis {name!r} is empty, so the grid has no tasks")
    return v


# The root seed of the sweep whose task runs in this thread: replicates and folds
# without a seed of their own draw from it.
sweep_seed = threading.local()


class _Seeded(int):
    """An int that draws its resample from its own seed, or else from the seed of the
    sweep running it."""

    seed: int | None

    def __new__(cls, number: int, seed: int | None = None, **attrs: Any):
        self = super().__new__(cls, number)
        self.seed = seed
        self.__dict__.update(attrs)
        return self

    def __reduce__(self):
        return (_rebuild, (type(self), int(self), dict(self.__dict__)))

    def bind(self, root_seed: int) -> _Seeded:
        """Return a copy that draws from ``root_seed`` unless a seed was fixed."""
        if self.seed is not None:
            return self
        return _rebuild(type(self), int(self), {**self.__dict__, "seed": root_seed})

    def _rng(self, *key: int) -> np.random.Generator:
        seed = self.seed if self.seed is not None else getattr(sweep_seed, "value", None)
        if seed is None:
            raise RuntimeError(
                f"{type(self).__name__} {int(self)} has no seed: it gets the sweep's seed when "
                "it runs inside sweep(); outside a sweep, pass seed= to bootstrap()/cv_folds(), or .bind(seed)"
            )
        return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x5EED, *key)))


def _rebuild(cls, number, attrs):
    obj = int.__new__(cls, number)
    obj.__dict__.update(attrs)
    return obj


class Replicate(_Seeded):
    """Bootstrap replicate number ``r``: an int that can draw its resample."""

    def indices(self, n: int) -> np.ndarray:
        """Indices of the bootstrap sample (``n`` draws with replacement from ``range(n)``)."""
        return self._rng(int(self)).integers(0, n, n)

    def split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(in_bag, out_of_bag)`` indices: the bootstrap sample and the rows it missed."""
        idx = self.indices(n)
        return idx, np.setdiff1d(np.arange(n), idx)


class Fold(_Seeded):
    """Fold number ``k`` of repeat ``repeat`` of a shuffled ``n_splits``-fold split."""

    repeat: int
    n_splits: int

    def split(self, n_or_y: int | Sequence, *, stratify: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(train, test)`` indices. The folds of one repeat partition ``range(n)``.

        Pass the labels ``y`` with ``stratify=True`` for stratified folds.
        """
        from sklearn.model_selection import KFold, StratifiedKFold

        y = np.asarray(n_or_y) if stratify else None
        n = len(y) if y is not None else int(n_or_y) if np.ndim(n_or_y) == 0 else len(n_or_y)
        state = int(self._rng(self.repeat).integers(2**31))
        splitter = (StratifiedKFold if stratify else KFold)(self.n_splits, shuffle=True, random_state=state)
        return list(splitter.split(np.zeros(n), y))[int(self)]


def bootstrap(n: int, *, seed: int | None = None) -> Tasks:
    """``n`` tasks ``{"replicate": r}``; ``r.indices(len(y))`` is replicate r's resample.

    The resample depends only on the sweep's seed (or ``seed``) and ``r``, so every
    model in ``grid(...) * bootstrap(n)`` is fitted on the same resamples.
    """
    _check_count("bootstrap", "n", n, 1)
    return Tasks(n, lambda r: {"replicate": Replicate(r, seed)}, frozenset({"replicate"}))


def cv_folds(k: int, repeats: int = 1, *, seed: int | None = None) -> Tasks:
    """``k * repeats`` tasks ``{"repeat": r, "fold": f}`` of repeated k-fold CV.

    ``fold.split(len(y))`` gives ``(train, test)`` indices; within a repeat the test
    sets partition the data.
    """
    _check_count("cv_folds", "k", k, 2)
    _check_count("cv_folds", "repeats", repeats, 1)

    def get(i: int) -> dict:
        r, f = divmod(i, k)
        return {"repeat": r, "fold": Fold(f, seed, repeat=r, n_splits=k)}

    return Tasks(k * repeats, get, frozenset({"repeat", "fold"}))


def _check_count(fn: str, name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{fn}(): {name} must be an integer >= {minimum}, got {value!r}")
