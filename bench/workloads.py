"""The benchmark's workloads and engines (importable by every engine's worker processes)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import elastic_net_simulation as recipe  # recipes/ is on the path (bench/run.py puts it there)

import sweepkit


def noop(x):
    return x


def workload(name: str, n: int, seed: int) -> tuple[Callable, sweepkit.Tasks, dict]:
    """``elastic-net``: n fits of the main recipe at its default data sizes, one per
    bootstrap replicate. ``no-op``: n tasks that return their argument."""
    if name == "elastic-net":
        tasks = sweepkit.bootstrap(n) * sweepkit.grid(model="elastic_net", alpha=0.2)
        return recipe.fit_one, tasks, recipe.make_data("simulated", 300, 50, 5, 2.0, seed)
    return noop, sweepkit.grid(x=range(n)), {}


def bound(tasks, seed: int) -> list[dict]:
    """The tasks as plain dicts whose bootstrap replicates carry the seed (sweepkit binds it itself)."""
    return [{k: v.bind(seed) if isinstance(v, sweepkit.Replicate) else v for k, v in t.items()} for t in tasks]


def call(fn, task: dict, shared: dict):
    return fn(**task, **shared)


_SHARED: dict = {}


def set_shared(shared: dict) -> None:
    """multiprocessing.Pool initializer: the shared data, once per worker process."""
    _SHARED.update(shared)


def call_with_globals(job):
    fn, task = job
    return fn(**task, **_SHARED)


@contextlib.contextmanager
def engine(name: str, workers: int, shared: dict) -> Iterator[Callable]:
    """A started engine: ``run(fn, tasks, plain_tasks)`` returns the values in task order."""
    if name == "serial":
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            yield lambda fn, tasks, plain: [fn(**t, **shared) for t in plain]

    elif name == "sweepkit":
        with sweepkit.sweep_cluster("local", workers=workers, dashboard_address="127.0.0.1:0"):
            yield lambda fn, tasks, plain: sweepkit.sweep(fn, tasks, shared=shared, seed=2024).to_list()

    elif name == "dask map":
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            def run(fn, tasks, plain):
                scattered = {k: client.scatter(v, broadcast=True, hash=False) for k, v in shared.items()}
                return client.gather(client.map(call, [fn] * len(plain), plain, shared=scattered, pure=False))

            yield run

    elif name == "joblib":
        from joblib import Parallel, delayed

        yield lambda fn, tasks, plain: Parallel(n_jobs=workers, backend="loky")(delayed(fn)(**t, **shared) for t in plain)

    elif name == "mp.Pool":
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers, initializer=set_shared, initargs=(shared,)) as pool:
            def run(fn, tasks, plain):
                chunksize = max(1, len(plain) // (4 * workers))  # Pool.map's own default rule
                return pool.map(call_with_globals, [(fn, t) for t in plain], chunksize=chunksize)

            yield run
    else:
        raise ValueError(f"unknown engine {name!r}")
