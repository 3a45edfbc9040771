"""The benchmark's tasks, importable by every engine's worker processes."""

from __future__ import annotations

import elastic_net_simulation as recipe  # recipes/ is on the path (bench/run.py puts it there)

import sweepkit

fit_one = recipe.fit_one


def elastic_net_data(seed: int) -> dict:
    """The main recipe's shared data at its default sizes."""
    return recipe.make_data("simulated", 300, 50, 5, 2.0, seed)


def elastic_net_tasks(n: int) -> sweepkit.Tasks:
    """``n`` elastic-net fits, one per bootstrap replicate."""
    return sweepkit.bootstrap(n) * sweepkit.grid(model="elastic_net", alpha=0.2)


def noop(x):
    return x


def bound(tasks, seed: int) -> list[dict]:
    """Tasks whose bootstrap replicates already carry the seed (sweepkit binds it itself)."""
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
