"""``sweep()``: run a function over many tasks, serially or on the active cluster."""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from . import engine
from .cluster import active_session
from .results import Results, TaskError
from .tasks import as_tasks

__all__ = ["sweep"]

ON_ERROR = ("raise", "collect")


def sweep(
    fn: Callable[..., Any],
    tasks: Iterable[Mapping[str, Any]],
    *,
    shared: Mapping[str, Any] | None = None,
    seed: int | None = None,
    on_error: str = "raise",
    batch_size: int | None = None,
    store: str | None = None,
    progress: bool | None = None,
) -> Results:
    """Call ``fn(**task, **shared)`` for every task and collect the results in task order.

    Parameters
    ----------
    fn
        The analysis. Task parameters and shared objects reach it as keyword
        arguments. If it has a parameter named ``rng``, it receives a
        ``numpy.random.Generator`` whose stream depends only on ``seed`` and the
        task's index: identical serially, on any cluster, for any batch size.
    tasks
        Parameter dicts: a list, a generator, or a builder such as
        ``grid(alpha=[...]) * bootstrap(100)``.
    shared
        Objects every task needs (``{"X": X, "y": y}``), sent to each worker once
        per sweep, never once per task.
    seed
        Root seed. ``None`` draws a fresh one, recorded as ``results.seed``.
    on_error
        ``"raise"``: stop at the first failing task with a :class:`TaskError` that
        names it. ``"collect"``: run every task, failures in ``results.errors``.
    batch_size
        Tasks that travel to a worker together. Default: sized automatically
        from measured task durations. Results never depend on it.
    store
        A folder that keeps every finished task on disk as it arrives; running
        the same sweep again with the same store resumes it.
    progress
        Show a progress bar on stderr. Default: when stderr is a terminal.

    Runs on the cluster of the enclosing ``with sweep_cluster(...)``, or serially in
    this process when there is none.
    """
    tasks = as_tasks(tasks)
    shared = dict(shared or {})
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None (automatic), got {batch_size!r}")
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None (a fresh seed), got {seed!r}")
    uses_rng = check_call(fn, tasks, shared)
    from .store import open_store

    run_store = open_store(store, fn, tasks, shared, seed, uses_rng) if store is not None else None  # before a cluster starts
    root_seed = run_store.seed if run_store else int(seed if seed is not None else np.random.SeedSequence().entropy)
    results = Results(tasks, root_seed, uses_rng=uses_rng)
    try:
        if run_store:
            run_store.load_into(results)
        session = active_session()
        if session is not None:
            check_picklable(fn)
        if run_store:
            run_store.begin(session)
        todo = _as_range(np.flatnonzero(results._status != engine.OK).tolist())
        bar = _progress_bar(len(tasks), len(tasks) - len(todo), fn, progress)
        collector = engine.Collector(results, run_store, bar)
        timing_key = engine.fn_name(fn)
        sizer = engine.BatchSizer(batch_size, per_task=session.task_seconds.get(timing_key) if session else None)
        args = (fn, tasks, todo, shared, root_seed, uses_rng, on_error == "raise", sizer, collector)
        if run_store and len(todo) < len(tasks):
            print(f"sweepkit: resuming {store}: {len(tasks) - len(todo)} of {len(tasks)} tasks already done", file=sys.stderr)
        try:
            if session is None:
                engine.run_serial(*args)
            else:
                engine.run_on_cluster(session, *args)
        except KeyboardInterrupt:
            done = len(results.done())
            kept = f"; they are kept in {store}: run the same sweep again to resume" if run_store else ""
            print(f"\nsweepkit: interrupted after {done} of {len(tasks)} tasks{kept}", file=sys.stderr)
            raise
        finally:
            if bar is not None:
                bar.close()
            if session is not None and sizer.per_task:  # the next sweep of fn starts at the right size
                session.task_seconds[timing_key] = sizer.per_task
    finally:
        if run_store:
            run_store.close(results)
    failure = collector.first_failure
    if on_error == "raise" and failure is not None:
        raise TaskError(failure, results) from failure.exception
    return results


def _as_range(indices: list[int]) -> range | list[int]:
    """Contiguous indices as a range: batches of it travel as two numbers."""
    if indices and indices[-1] - indices[0] == len(indices) - 1:
        return range(indices[0], indices[-1] + 1)
    return indices


def check_call(fn: Callable, tasks, shared: dict) -> bool:
    """Check, before anything runs, that every task's parameters fit ``fn``.

    Returns whether ``fn`` takes ``rng``.
    """
    if not callable(fn):
        raise TypeError(f"sweep() needs a function as its first argument, got {type(fn).__name__} {fn!r}")
    name = getattr(fn, "__name__", repr(fn))
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # some builtins: nothing to check against
        return False
    kinds = inspect.Parameter
    names = {n for n, p in params.items() if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)}
    takes_any = any(p.kind == kinds.VAR_KEYWORD for p in params.values())
    required = {n for n in names if params[n].default is kinds.empty}
    positional = [n for n, p in params.items() if p.kind == kinds.POSITIONAL_ONLY and p.default is kinds.empty]
    if positional:
        raise TypeError(f"{name}() has positional-only parameter(s) {positional}; sweep passes everything by name")
    uses_rng = "rng" in names
    if "rng" in shared:
        raise ValueError("shared has an object named 'rng': that name is reserved for the task's random generator")
    for index, keys in _key_sets(tasks):
        where = f"task {index} ({_short_keys(keys)})"
        if "rng" in keys and uses_rng:
            raise ValueError(f"{where} has a parameter 'rng', but {name}() receives its random generator under that name; rename it")
        clash = sorted(keys & shared.keys())
        if clash:
            raise ValueError(f"{where}: {clash} is both a task parameter and a shared object; rename one of them")
        unknown = sorted(keys - names) if not takes_any else []
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"{where} has parameter {unknown[0]!r}, which {name}() does not accept{hint} "
                f"{name}() accepts: {', '.join(sorted(names)) or 'no parameters'}"
            )
        missing = sorted(required - keys - shared.keys() - {"rng"})
        if missing:
            raise TypeError(f"{name}() requires {missing}, but {where} does not give it and shared has no such object")
    unused = sorted(shared.keys() - names) if not takes_any else []
    if unused:
        raise TypeError(f"shared object(s) {unused} are not parameters of {name}(); it accepts: {', '.join(sorted(names))}")
    return uses_rng


def _key_sets(tasks) -> list[tuple[int, frozenset]]:
    """Each distinct set of parameter names with the first task that has it."""
    if tasks.keys is not None:
        return [(0, tasks.keys)] if len(tasks) else []
    first: dict[frozenset, int] = {}
    for i, t in enumerate(tasks):
        first.setdefault(frozenset(t), i)
    return [(i, k) for k, i in first.items()]


def _short_keys(keys: frozenset) -> str:
    names = sorted(keys)
    return "parameters " + ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "no parameters"


def check_picklable(fn: Callable) -> None:
    import cloudpickle

    try:
        cloudpickle.dumps(fn)
    except Exception as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(
            f"{name} cannot be pickled, so it cannot be sent to the workers ({type(exc).__name__}: {exc}). "
            "Define it at the top level of a module or script, and pass data through shared= "
            "instead of capturing objects such as locks, open files or connections."
        ) from exc


def _progress_bar(total: int, done: int, fn: Callable, enabled: bool | None):
    import os

    if enabled is None:
        enabled = sys.stderr.isatty() or os.environ.get("SWEEPKIT_PROGRESS") == "1"
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=done, desc=getattr(fn, "__name__", "sweep"), unit="task",
        file=sys.stderr, mininterval=0.5, dynamic_ncols=True,
    )
