"""The object a sweep returns: every task's value, in task order, with its metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .tasks import Tasks, _Seeded

__all__ = ["Results", "TaskFailure", "TaskError", "PENDING"]

# Status codes, stored one byte per task.
PENDING_CODE, OK, ERROR = 0, 1, 2
STATUS_NAMES = {PENDING_CODE: "pending", OK: "ok", ERROR: "error"}


class _Pending:
    """Placeholder for a task that has no result yet (an interrupted run)."""

    def __repr__(self) -> str:
        return "PENDING"

    def __reduce__(self):
        return "PENDING"


PENDING = _Pending()


@dataclass
class TaskFailure:
    """A task that raised: its index, parameters, exception and traceback text."""

    index: int
    params: dict
    error: str  # "ValueError: message"
    traceback: str
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"TaskFailure(task={self.index}, {self.error})"


class TaskError(Exception):
    """A task failed under ``on_error="raise"``.

    ``index`` and ``params`` name the task; ``results`` holds everything that
    finished before the sweep stopped (nothing computed is lost); the original
    exception is chained as ``__cause__``.
    """

    def __init__(self, failure: TaskFailure, results: Results):
        self.index, self.params, self.failure, self.results = failure.index, failure.params, failure, results
        done = results.counts()["ok"]
        super().__init__(
            f"task {failure.index} failed with {failure.error}\n"
            f"  parameters: {_short(failure.params)}\n"
            f"  {done} task(s) finished before the sweep stopped: they are in this error's .results; "
            'pass on_error="collect" to run every task and collect the failures'
        )


class RemoteTraceback(Exception):
    """The traceback of an exception raised on a worker, as text."""

    def __str__(self) -> str:
        return "\n\n" + self.args[0]


class Results(Sequence):
    """The values of a sweep's tasks, in task order.

    ``results[i]`` is task ``i``'s return value (a :class:`TaskFailure` if it
    raised, :data:`PENDING` if it has not run). ``to_frame()`` gives one row per
    task; ``errors`` the failures; ``seed`` the root seed that makes the run
    repeatable.
    """

    def __init__(self, tasks: Tasks, seed: int, *, uses_rng: bool, info: dict | None = None):
        n = len(tasks)
        self.tasks = tasks
        self.seed = seed
        self.uses_rng = uses_rng
        self.info = info or {}
        self._values: list[Any] = [PENDING] * n
        self._status = np.zeros(n, dtype=np.int8)
        self._duration = np.full(n, np.nan)
        self._task_seed = np.zeros(n, dtype=np.int64) if uses_rng else None
        self._worker: list[str | None] = [None] * n
        self._failures: dict[int, TaskFailure] = {}

    # -- filled in by the engine and the store -------------------------------------
    def _record_many(self, indices: list[int], values: list, statuses: bytes, durations: list[float], worker: str | None, seeds: list[int] | None) -> None:
        """Record a batch of finished tasks (the engine's hot path: no per-task Python work
        beyond placing each value)."""
        n = len(values)
        where = slice(indices[0], indices[0] + n) if indices[n - 1] - indices[0] == n - 1 else indices[:n]
        if isinstance(where, slice):
            self._values[where] = values
            self._worker[where] = [worker] * n
        else:
            for i, v in zip(where, values):
                self._values[i] = v
                self._worker[i] = worker
        self._status[where] = np.frombuffer(statuses, dtype=np.int8)
        self._duration[where] = durations
        if seeds is not None and self._task_seed is not None:
            self._task_seed[where] = seeds
        if self._failures:  # a retried task that failed before
            for i in indices[:n]:
                self._failures.pop(i, None)
        if ERROR in statuses:
            for i, v, s in zip(indices, values, statuses):
                if s == ERROR:
                    self._failures[i] = v

    # -- the list interface ----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, i):  # type: ignore[override]
        return self._values[i]

    def to_list(self) -> list:
        """The values as a plain list, in task order."""
        return list(self._values)

    @property
    def errors(self) -> list[TaskFailure]:
        """The failed tasks, in task order, each with its traceback."""
        return [self._failures[i] for i in sorted(self._failures)]

    @property
    def ok(self) -> bool:
        """True when every task finished without error."""
        return bool((self._status == OK).all())

    def counts(self) -> dict[str, int]:
        """Number of tasks by status: ``{"ok": ..., "error": ..., "pending": ...}``."""
        found = np.bincount(self._status, minlength=3)
        return {"ok": int(found[OK]), "error": int(found[ERROR]), "pending": int(found[PENDING_CODE])}

    def done(self) -> np.ndarray:
        """Indices of the tasks that finished (ok or error)."""
        return np.flatnonzero(self._status != PENDING_CODE)

    def status(self, i: int) -> str:
        return STATUS_NAMES[int(self._status[i])]

    def __repr__(self) -> str:
        c = self.counts()
        parts = [f"{c['ok']} ok"] + [f"{c[k]} {k}" for k in ("error", "pending") if c[k]]
        return f"<Results: {len(self)} tasks, {', '.join(parts)}; seed={self.seed}>"

    # -- the table ------------------------------------------------------------------
    def to_frame(self):
        """One row per task: task index, parameters, value(s), seed, status, error,
        duration (seconds) and worker.

        A dict (or pandas Series) return value becomes one column per key; any other
        value one ``value`` column. If every task returned a DataFrame, their rows
        are stacked, each tagged with its task's index and parameters.
        """
        import pandas as pd

        n = len(self)
        params = pd.DataFrame([_plain(t) for t in self.tasks], index=range(n))
        meta = pd.DataFrame(
            {
                "seed": pd.array(self._task_seed, dtype="Int64") if self.uses_rng else pd.array([pd.NA] * n, "Int64"),
                "status": pd.Categorical.from_codes(self._status, ["pending", "ok", "error"]),
                "error": [self._failures[i].error if i in self._failures else None for i in range(n)],
                "duration": self._duration,
                "worker": self._worker,
            },
            index=range(n),
        )
        ok = np.flatnonzero(self._status == OK)
        ok_values = [self._values[i] for i in ok]
        if ok_values and all(isinstance(v, pd.DataFrame) for v in ok_values):
            return _stack_frames(ok, ok_values, params, meta)
        if ok_values and all(isinstance(v, (Mapping, pd.Series)) for v in ok_values):
            values = pd.DataFrame([dict(v) for v in ok_values], index=ok).reindex(range(n))
        else:
            column = [v if s == OK else None for v, s in zip(self._values, self._status)]
            values = pd.DataFrame({"value": column}, index=range(n))
        values.columns = _rename_clashes(values.columns, set(params.columns) | set(meta.columns) | {"task"})
        frame = pd.concat([params, values, meta], axis=1)
        frame.insert(0, "task", np.arange(n))
        return frame


def _stack_frames(ok: np.ndarray, frames: list, params, meta):
    import pandas as pd

    keyed = [f.assign(task=i) for i, f in zip(ok, frames)]
    stacked = pd.concat(keyed, ignore_index=True)
    stacked.columns = _rename_clashes(stacked.columns, set(params.columns) | set(meta.columns) - {"task"})
    head = pd.concat([params, meta], axis=1).rename_axis("task").reset_index()
    return head.merge(stacked, on="task", how="right")


def _rename_clashes(columns, taken: set) -> list:
    return [f"{c}_value" if c in taken else c for c in columns]


def _plain(task: Mapping) -> dict:
    """Task parameters as plain values (a bootstrap Replicate becomes its number)."""
    return {k: int(v) if isinstance(v, _Seeded) else v for k, v in task.items()}


def _short(params: Mapping, limit: int = 300) -> str:
    text = repr(_plain(params))
    return text if len(text) <= limit else text[: limit - 3] + "..."
