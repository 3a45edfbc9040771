"""Backends build a Dask cluster from a profile's options.

A backend is a short class: its options with their defaults, a ``start`` that
returns a ``distributed`` cluster, and optionally a ``job_script`` and a
``diagnose`` that explains why workers do not arrive. Backends are imported on
first use, so a missing optional dependency only matters when it is needed.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__all__ = ["Backend", "backend_for", "BACKENDS", "parse_workers"]

# backend name -> (module, class, pip extra that provides its dependencies)
BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "serial": ("sweepkit.backends", "SerialBackend", None),
    "local": ("sweepkit.backends.local", "LocalBackend", None),
    "sge": ("sweepkit.backends.jobqueue", "SGEBackend", "sge"),
    "slurm": ("sweepkit.backends.jobqueue", "SlurmBackend", "slurm"),
    "pbs": ("sweepkit.backends.jobqueue", "PBSBackend", "pbs"),
    "lsf": ("sweepkit.backends.jobqueue", "LSFBackend", "lsf"),
}

# Options every backend takes; ``workers`` means the number of Dask worker processes.
COMMON = {
    "workers": None,  # an int, "MIN:MAX" or {minimum: .., maximum: ..} for adaptive scaling
    "threads": 1,  # threads per worker process
    "memory": None,  # memory per worker process, e.g. "4GiB"
    "dashboard-address": "127.0.0.1:8787",
    "env": {},  # extra environment variables for the workers
    "startup-timeout": 120,  # seconds to wait for the first worker
    "description": "",
}


class Backend:
    name = "?"
    defaults: dict[str, Any] = COMMON

    def validate(self, options: dict[str, Any]) -> dict[str, Any]:
        options = dict(options)
        options["workers"] = parse_workers(options.get("workers"))
        threads = options.get("threads")
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"option 'threads' must be a positive integer, got {threads!r}")
        if not isinstance(options.get("env") or {}, dict):
            raise ValueError("option 'env' must be a mapping of environment variable names to values")
        return options

    def start(self, options: dict[str, Any]):
        raise NotImplementedError

    def job_script(self, options: dict[str, Any]) -> str | None:
        return None

    def diagnose(self, cluster) -> str | None:
        return None

    def closing(self, cluster) -> None:
        """Called just before the cluster shuts down."""


class SerialBackend(Backend):
    """No cluster: every sweep runs in the calling process."""

    name = "serial"


def backend_for(name: str, profile: str = "?") -> Backend:
    from .. import profiles

    if name not in BACKENDS:
        raise profiles.ProfileError(
            f"cluster profile {profile!r} names backend {name!r}, which sweepkit does not know; "
            f"backends: {', '.join(BACKENDS)}"
        )
    module, cls, extra = BACKENDS[name]
    try:
        return getattr(importlib.import_module(module), cls)()
    except ModuleNotFoundError as exc:
        if extra is None or (exc.name or "").startswith("sweepkit"):
            raise
        raise ModuleNotFoundError(
            f"the {name!r} backend needs {exc.name}, which is not installed; "
            f'install it with: pip install "sweepkit[{extra}]"',
            name=exc.name,
        ) from exc


def parse_workers(value: Any) -> tuple[int, int] | None:
    """``4`` -> (4, 4); ``"2:10"`` or ``{minimum: 2, maximum: 10}`` -> (2, 10) (adaptive)."""
    if value is None:
        return None
    low = high = None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        low, high = value
    elif isinstance(value, dict):
        low, high = value.get("minimum", value.get("min", 0)), value.get("maximum", value.get("max"))
    elif isinstance(value, str) and ":" in value:
        a, _, b = value.partition(":")
        low, high = a or 0, b
    else:
        low = high = value
    try:
        low, high = int(low), int(high)
    except (TypeError, ValueError):
        raise ValueError(
            f"option 'workers' must be a number (4), a range 'MIN:MAX' ('1:20') or "
            f"{{minimum: 1, maximum: 20}}, got {value!r}"
        ) from None
    if low < 0 or high < max(low, 1):
        raise ValueError(f"option 'workers': need 0 <= minimum <= maximum and maximum >= 1, got {value!r}")
    return low, high


# Dask settings that keep schedulers, nannies and workers lean on a busy machine.
# With Dask's defaults, each idle process woke 50 times a second and used about 2%
# of a core (five processes on a 2-core machine: 5% of it); with these, 0.2-1%.
# The statistical profiler sampled every worker thread 100 times a second, which
# showed on millisecond tasks (the dashboard's profile tab needs it). The scheduler
# keeps the last 1,000 messages to each worker for debugging, each holding a whole
# batch of task parameters: 76 MB after a sweep of 300,000 small tasks; 16 suffice.
# The Active Memory Manager's ReduceReplicas policy deletes broadcast copies of the
# shared data every 2 s, and workers then fetched them again mid-sweep.
LEAN_DASK_CONFIG = {
    "distributed.scheduler.active-memory-manager.start": False,
    "distributed.admin.low-level-log-length": 16,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.tick.limit": "30s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
    "distributed.worker.profile.enabled": False,
}


def dask_env(config: dict[str, Any]) -> dict[str, str]:
    """``{"distributed.admin.tick.interval": "1s"}`` -> ``{"DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s"}``."""
    return {"DASK_" + k.upper().replace(".", "__").replace("-", "_"): str(v) for k, v in config.items()}


def worker_environment(options: dict[str, Any]) -> dict[str, str]:
    """What every worker needs in its environment, whatever starts it.

    The driver's import path (so functions from the user's modules unpickle), the
    thread count of numerical libraries, and Dask settings that keep workers lean.
    Nothing secret: only these variables and the profile's ``env`` are set.
    """
    skip = (sys.prefix, sys.base_prefix)  # the interpreter's own paths: workers have them
    path = [p or os.getcwd() for p in sys.path if not p.startswith(skip) and "dask-scratch-space" not in p]
    env = dask_env(LEAN_DASK_CONFIG)
    env.update(
        PYTHONPATH=os.pathsep.join(dict.fromkeys(path)),
        DASK_DISTRIBUTED__NANNY__PRELOAD='["sweepkit.worker_setup"]',
        DASK_LOGGING__DISTRIBUTED="warning",
    )
    env.update({k: v for k, v in os.environ.items() if k.startswith("DASK_")})  # the user's own Dask settings win
    if os.environ.get("PYTHONHASHSEED", "0") != "0":  # same str hashes, same set order, as the driver
        env["PYTHONHASHSEED"] = os.environ["PYTHONHASHSEED"]
    env.update({str(k): str(v) for k, v in (options.get("env") or {}).items()})
    return env
