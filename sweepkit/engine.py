"""Running tasks: one batch runner used both in-process and on Dask workers.

The driver cuts the task list into batches sized from measured task durations,
keeps a bounded number of batches in flight, and records each batch as it
returns, so memory grows with the results, never with the number of tasks.
"""

from __future__ import annotations

import math
import os
import pickle
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .results import ERROR, OK, RemoteTraceback, TaskFailure, _plain
from .tasks import Tasks, sweep_seed


_task_context = threading.local()
_called: set[str] = set()  # functions this process has run (the first call pays one-time costs)


def in_task() -> bool:
    """True while a sweep task runs in this thread."""
    return getattr(_task_context, "active", False)


def fn_name(fn: Callable) -> str:
    """``module.qualname`` of a task function: the key of its measured task time."""
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"


def task_seed(root_seed: int, index: int) -> int:
    """The 63-bit seed of task ``index``: ``numpy.random.default_rng(task_seed(...))``
    is the generator that task receives. It depends only on the root seed and the index."""
    state = np.random.SeedSequence(root_seed, spawn_key=(index,)).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


@dataclass
class Batch:
    """Tasks that travel together: only their indices (a range when contiguous); the
    worker looks their parameters up in the task list it received once per sweep."""

    indices: Sequence[int]


@dataclass
class BatchResult:
    values: list[Any]  # a TaskFailure where the task raised
    durations: list[float]
    statuses: bytes
    seeds: list[int] | None
    worker: str | None
    stopped: bool  # True when an error stopped the batch early ("raise" mode)
    cold: bool = False  # its first task was this process's first call of the function
    packed: bytes | None = None  # the values, pickled on the worker: see pack()

    def timing(self) -> tuple[int, float]:
        """(tasks, seconds) for sizing batches: a process's first call of a function
        pays one-time costs (imports, caches) and would make later batches too small."""
        durations = self.durations[1:] if self.cold else self.durations
        return len(durations), sum(durations)

    def pack(self) -> BatchResult:
        """Pickle the values into one bytes object before they travel.

        Dask sends each array inside a result as a frame of its own: 10,000 results
        holding a small array each cost the driver 10,000 socket reads. One in-band
        pickle per batch is one frame; the driver unpacks it, and the durable store
        writes these same bytes.
        """
        self.packed = dumps(self.values)
        self.values = []
        return self

    def unpack(self) -> BatchResult:
        if self.packed is not None and not self.values:
            self.values = pickle.loads(self.packed)
        return self


def dumps(values: list) -> bytes:
    """Pickle task values (cloudpickle for what pickle cannot do, such as lambdas)."""
    try:
        return pickle.dumps(values, protocol=5)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(values, protocol=5)


def run_batch(
    fn: Callable, tasks: Tasks, batch: Batch, shared: dict, root_seed: int, uses_rng: bool, stop_on_error: bool,
    in_process: bool = False,
) -> BatchResult:
    """Call ``fn`` for every task of ``batch``; exceptions become TaskFailure values."""
    worker = "local process" if in_process else _worker_name()
    values, durations, statuses = [], [], bytearray()
    seeds: list[int] | None = [] if uses_rng else None
    clock, get, stopped = time.perf_counter, tasks._get, False
    name = fn_name(fn)
    cold = name not in _called
    _called.add(name)
    outer = in_task(), getattr(sweep_seed, "value", None)  # a sweep may run inside a task
    _task_context.active, sweep_seed.value = True, root_seed  # replicates and folds draw from it
    try:
        for i in batch.indices:
            kwargs = get(i)  # a fresh dict: ours to extend
            kwargs.update(shared)
            if seeds is not None:
                seeds.append(task_seed(root_seed, i))
                kwargs["rng"] = np.random.default_rng(seeds[-1])
            start = clock()
            try:
                value, status = fn(**kwargs), OK
            except Exception as exc:  # a task's failure is data; KeyboardInterrupt is not caught
                value, status = _failure(i, get(i), exc, remote=not in_process), ERROR
            durations.append(clock() - start)
            values.append(value)
            statuses.append(status)
            if status == ERROR and stop_on_error:
                stopped = True
                break
    finally:
        _task_context.active, sweep_seed.value = outer
    result = BatchResult(values, durations, bytes(statuses), seeds, worker, stopped, cold)
    if in_process:
        return result
    try:
        return result.pack()
    except Exception:  # some task returned what cannot travel: that task failed
        for k, (i, value) in enumerate(zip(batch.indices, values)):
            try:
                dumps([value])
            except Exception as exc:
                values[k] = _failure(i, tasks._get(i), TypeError(f"its result ({type(value).__name__}) cannot be pickled to return it: {exc}"), True)
                statuses[k] = ERROR
        return BatchResult(values, durations, bytes(statuses), seeds, worker, stopped, cold).pack()


def _failure(i: int, params: dict, exc: BaseException, remote: bool) -> TaskFailure:
    tb = "".join(traceback.format_exception(exc))
    if remote:  # the exception travels back to the driver: keep it only if it pickles
        try:
            exc = pickle.loads(pickle.dumps(exc))
        except Exception:
            exc = RuntimeError(f"{type(exc).__name__}: {exc} (the original exception could not be pickled)")
        exc.__cause__ = RemoteTraceback(tb)
    return TaskFailure(i, _plain(params), f"{type(exc).__name__}: {exc}", tb, exc)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        w = get_worker()
        return str(w.name) if w.name is not None else w.address
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


class BatchSizer:
    """Chooses how many tasks travel together.

    Batches aim at ``target`` seconds of work, long enough to hide the per-task
    overhead of the scheduler, and shrink towards the end (guided scheduling) so
    every worker stays busy to the last task, down to a twentieth of the target
    (smaller batches would cost more in round trips than they balance). Until a
    first batch has been timed, batches hold one task, unless ``per_task`` (seconds,
    measured by an earlier sweep of the same function) is known. A ``fixed`` size
    overrides all that.
    """

    def __init__(self, fixed: int | None = None, target: float = 1.0, limit: int = 10_000, per_task: float | None = None):
        self.fixed, self.target, self.limit = fixed, target, limit
        self.per_task = per_task  # smoothed seconds per task
        self.largest = max(1, int(target / per_task)) if per_task else 1

    def observe(self, n_tasks: int, seconds: float) -> None:
        if n_tasks:
            rate = max(seconds / n_tasks, 1e-7)
            self.per_task = rate if self.per_task is None else 0.5 * (self.per_task + rate)

    def next(self, remaining: int, slots: int) -> int:
        if self.fixed:
            return min(self.fixed, remaining)
        if self.per_task is None:
            return 1
        full = min(self.target / self.per_task, 16 * self.largest, self.limit)  # grow fast, not blindly
        tail = math.ceil(remaining / (2 * max(slots, 1)))  # guided: shrink as the end nears...
        floor = self.target / 20 / self.per_task  # ...but not below what hides a round trip
        size = max(1, int(min(full, max(tail, floor))))
        self.largest = max(self.largest, size)
        return min(size, remaining)


def batches(todo: Sequence[int], size: Callable[[int], int]) -> Iterator[Batch]:
    """Cut ``todo`` (a range, or a list when a resumed run has gaps) into batches;
    ``size(unsent)`` decides each batch's length."""
    start = 0
    while start < len(todo):
        stop = start + size(len(todo) - start)
        yield Batch(todo[start:stop])
        start = stop


class Collector:
    """Receives finished batches on the driver: results, store, progress bar."""

    def __init__(self, results, store=None, progress=None):
        self.results, self.store, self.progress = results, store, progress
        self.first_failure: TaskFailure | None = None

    def add(self, batch: Batch, res: BatchResult) -> None:
        self.results._record_many(batch.indices, res.values, res.statuses, res.durations, res.worker, res.seeds)
        if self.first_failure is None and ERROR in res.statuses:
            self.first_failure = res.values[res.statuses.index(ERROR)]
        if self.store is not None:
            self.store.append(batch.indices[: len(res.values)], res)
        if self.progress is not None:
            self.progress.update(len(res.values))


def run_serial(fn, tasks, todo, shared, root_seed, uses_rng, stop_on_error, sizer, collector) -> None:
    """Run the tasks in this process, one batch after another (a debugger works here)."""
    from threadpoolctl import threadpool_limits

    for batch in batches(todo, lambda unsent: sizer.next(unsent, 1)):
        with threadpool_limits(1):  # as on Dask workers: same floats everywhere
            res = run_batch(fn, tasks, batch, shared, root_seed, uses_rng, stop_on_error, in_process=True)
        sizer.observe(*res.timing())
        collector.add(batch, res)
        if res.stopped:
            return


def run_on_cluster(session, fn, tasks, todo, shared, root_seed, uses_rng, stop_on_error, sizer, collector) -> None:
    """Run the tasks on the session's Dask cluster, streaming results back.

    ``fn`` and the shared objects are scattered once to every worker (a worker that
    joins later fetches them from a peer once). At most ``2 x threads`` batches are
    in flight; a batch whose worker died is split into single tasks and retried.
    """
    from distributed import KilledWorker

    from .cluster import ClusterError

    client = session.client
    session.ensure_workers()
    inputs = [session.scatter(fn, tasks, shared)]  # futures of fn, tasks, shared; replaced if their data are lost
    done: queue.SimpleQueue = queue.SimpleQueue()
    in_flight: dict = {}  # future -> (Batch, the inputs it was submitted with)
    retry: list[Batch] = []

    def submit(batch: Batch) -> None:
        fn_future, tasks_future, shared_futures = inputs[-1]
        fut = client.submit(
            run_batch, fn_future, tasks_future, batch, shared_futures, root_seed, uses_rng, stop_on_error,
            pure=False, key=f"sweepkit-batch-{batch.indices[0]}-{os.urandom(4).hex()}",
        )
        in_flight[fut] = (batch, len(inputs))
        fut.add_done_callback(fetch)

    def fetch(fut) -> None:  # on distributed's callback thread: results arrive while we record
        try:
            done.put((fut, fut.result().unpack()))
        except BaseException as exc:
            done.put((fut, exc))

    def inputs_lost() -> bool:
        fn_future, tasks_future, shared_futures = inputs[-1]
        return any(f.status != "finished" for f in [fn_future, tasks_future, *shared_futures.values()])

    source = batches(todo, lambda unsent: sizer.next(unsent, session.slots()))
    try:
        while True:
            while len(in_flight) < session.max_in_flight():
                batch = retry.pop() if retry else next(source, None)
                if batch is None:
                    break
                submit(batch)
            if not in_flight:
                return
            fut, res = _next_done(done, session)
            batch, generation = in_flight.pop(fut)
            if isinstance(res, BaseException):
                if isinstance(res, KilledWorker):
                    if len(batch.indices) > 1:  # find the task that kills workers
                        retry.extend(Batch([i]) for i in batch.indices)
                        continue
                    res = _killed_result(batch, tasks, res, root_seed if uses_rng else None)
                elif generation < len(inputs) or (inputs_lost() and len(inputs) < 5):
                    # The only workers holding the function or shared data died before
                    # a peer copied them: send them again and rerun the batch.
                    if generation == len(inputs):
                        print("sweepkit: the workers holding the shared data are gone; sending it again", file=sys.stderr)
                        session.ensure_workers()
                        inputs.append(session.scatter(fn, tasks, shared))
                    retry.append(batch)
                    continue
                elif fut.cancelled():
                    raise ClusterError("a batch was cancelled by the scheduler: did the cluster shut down?")
                else:
                    raise session.explain_failure(res) from res
            sizer.observe(*res.timing())
            collector.add(batch, res)
            if res.stopped:
                return
    finally:
        if in_flight:
            client.cancel(list(in_flight), force=True)
        client.cancel([f for fn_future, tasks_future, shared_futures in inputs for f in [fn_future, tasks_future, *shared_futures.values()]], force=True)


def _next_done(done: queue.SimpleQueue, session):
    """Wait for the next finished batch, checking the cluster's health meanwhile."""
    while True:
        try:
            return done.get(timeout=1.0)
        except queue.Empty:
            session.check_health()


def _killed_result(batch: Batch, tasks: Tasks, exc: BaseException, root_seed: int | None) -> BatchResult:
    i, params = batch.indices[0], tasks[batch.indices[0]]
    msg = (
        "the worker running this task died (KilledWorker): out of memory, a crash in compiled "
        "code, or its job was killed; see the worker logs"
    )
    failure = TaskFailure(i, _plain(params), msg, str(exc), exc)
    seeds = None if root_seed is None else [task_seed(root_seed, i)]
    return BatchResult([failure], [math.nan], bytes([ERROR]), seeds, None, False)
