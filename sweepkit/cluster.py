"""``sweep_cluster``: where sweeps run, chosen by the user and nobody else.

Inside ``with sweep_cluster("sge"):`` every ``sweep()`` runs on that cluster;
outside any, sweeps run serially in the calling process, unless the environment
names a profile (``SWEEPKIT_CLUSTER=local``), which then starts once, on first
use, and stops when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from . import profiles
from .backends import backend_for
from .engine import in_task

__all__ = ["sweep_cluster", "Session", "ClusterError", "active_session"]

_stack: list[Session | None] = []  # innermost ``with sweep_cluster`` last (None: serial)
_implicit: dict[str, Session | None] = {}
_lock = threading.Lock()


class ClusterError(RuntimeError):
    """The cluster cannot run the sweep (no workers arrive, workers cannot import code, ...)."""


class _Quiet(logging.Filter):
    """While a session runs: Dask's INFO chatter (connections opening and closing) and
    the messages about what sweepkit handles itself stay out of the user's terminal."""

    HANDLED = (
        "lose scattered data",  # sweepkit sends the shared data again
        "Command exited with non-zero exit code",  # a refused job submission: diagnose() quotes it
    )

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        return record.levelno >= logging.WARNING and not any(h in text for h in self.HANDLED)


class Session:
    """A running Dask cluster and its client, built from a profile."""

    def __init__(self, profile: profiles.Profile):
        import dask
        from distributed import Client

        from .backends import LEAN_DASK_CONFIG

        self.profile = profile
        self.backend = backend_for(profile.backend, profile.name)
        self._config = dask.config.set(LEAN_DASK_CONFIG)  # for the scheduler, in this process, while it runs
        self._quiet = _Quiet()
        self._filtered = [*logging.getLogger("distributed").handlers, logging.getLogger("tornado.application")]
        for f in self._filtered:  # Dask's own handlers, and the logger of failed callbacks
            f.addFilter(self._quiet)
        try:
            self.cluster = self.backend.start(profile.options)
        except BaseException:
            self._restore()
            raise
        try:
            self.client = Client(self.cluster, set_as_default=False, direct_to_workers=True)
        except BaseException:
            self._close_cluster()
            raise
        self._slots = (0, 0.0)  # (threads, when counted)
        self.task_seconds: dict[str, float] = {}  # function -> seconds per task, measured by its last sweep
        self.closed = False

    # -- what the engine needs -----------------------------------------------------
    @property
    def dashboard_link(self) -> str | None:
        return getattr(self.cluster, "dashboard_link", None)

    def describe(self) -> str:
        low, high = self.profile.options.get("workers") or (0, 0)
        size = f"{high} worker{'s' * (high != 1)}" if low == high else f"{low}-{high} workers, adaptive"
        return f"cluster {self.profile.name!r} ({self.profile.backend}, {size})"

    def slots(self) -> int:
        """Worker threads in the cluster now (counted at most once a second)."""
        threads, when = self._slots
        if time.monotonic() - when > 1.0:
            threads = sum(self.client.nthreads().values())
            self._slots = (threads, time.monotonic())
        return threads

    def max_in_flight(self) -> int:
        """How many batches to keep submitted: two per thread, planned threads included,
        so an adaptive cluster sees the demand that makes it grow."""
        workers = self.profile.options.get("workers")
        planned = (workers[1] if workers else 1) * self.profile.options.get("threads", 1)
        return 2 * max(self.slots(), planned, 1)

    def ensure_workers(self) -> None:
        """Wait for a first worker, with a clear error if none can come."""
        timeout = float(self.profile.options.get("startup-timeout") or 120)
        deadline = time.monotonic() + timeout
        while not self.client.nthreads():
            self.check_health()
            if time.monotonic() > deadline:
                why = self.backend.diagnose(self.cluster)
                raise ClusterError(
                    f"no worker joined {self.describe()} within {timeout:.0f} s. " + (f"{why} " if why else "")
                    + "Raise the profile option startup-timeout if workers just need longer."
                )
            time.sleep(0.2)

    def check_health(self) -> None:
        problem = self.backend.diagnose(self.cluster)
        if problem:
            raise ClusterError(f"{self.describe()} cannot run the sweep: {problem}")

    def scatter(self, fn, tasks, shared: dict[str, Any]):
        """Send ``fn``, the task list and each shared object to every worker, once,
        under fresh keys.

        Everything goes in one list, so each object (a dict or a list included) stays
        one opaque value under a random key: two sweeps never share a key.
        """
        import cloudpickle

        try:
            fn_future, tasks_future, *futures = self.client.scatter([fn, tasks, *shared.values()], broadcast=True, hash=False)
        except Exception as exc:
            named = [("the function", fn), ("the task list", tasks), *((f"shared[{k!r}]", v) for k, v in shared.items())]
            for name, obj in named:
                try:
                    cloudpickle.dumps(obj)
                except Exception as why:
                    raise TypeError(f"{name} cannot be sent to the workers: {type(why).__name__}: {why}") from exc
            raise
        return fn_future, tasks_future, dict(zip(shared, futures))

    def explain_failure(self, exc: BaseException) -> Exception:
        """A clear error for a batch that failed outside the user's function."""
        hint = ""
        if isinstance(exc, (ModuleNotFoundError, ImportError)):
            hint = (
                " The workers cannot import code the function needs: install it into the environment "
                "the workers run (the driver's, by default), or put it on PYTHONPATH."
            )
        return ClusterError(f"a batch failed on {self.describe()}: {type(exc).__name__}: {exc}.{hint}")

    # -- activation: ``with session:`` runs the block's sweeps here, without closing it --
    def __enter__(self) -> Session:
        _stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _stack.remove(self)

    # -- shutting down ---------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.client.close(timeout=10)
        self._close_cluster()

    def _close_cluster(self) -> None:
        try:
            self.backend.closing(self.cluster)
            self.cluster.close(timeout=30)
        except Exception as exc:  # never let a shutdown error hide the user's own
            print(f"sweepkit: closing the cluster raised {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            cleanup = getattr(self.backend, "cleanup", None)
            if cleanup:
                cleanup(self.cluster)
            self._restore()

    def _restore(self) -> None:
        self._config.__exit__(None, None, None)
        for f in self._filtered:
            f.removeFilter(self._quiet)


@contextlib.contextmanager
def sweep_cluster(profile: str | None = None, **overrides: Any) -> Iterator[Session | None]:
    """Run every ``sweep()`` inside this block on the cluster a profile describes.

    ``profile`` defaults to ``--cluster`` on the command line, then
    ``$SWEEPKIT_CLUSTER``, then ``"local"``. Keyword arguments override the
    profile's options (``workers=4``, ``memory="8GiB"``, ``queue="long.q"``). On
    leaving the block, even by an exception or Ctrl-C, the client, the cluster and
    every worker are shut down. Yields the :class:`Session` (``None`` for the
    ``serial`` profile): ``session.client`` is a ``distributed.Client``.
    """
    resolved = profiles.resolve(profile, overrides)
    session = start(resolved)
    _stack.append(session)
    try:
        yield session
    finally:
        _stack.remove(session)
        if session is not None:
            session.close()


def start(profile: profiles.Profile) -> Session | None:
    if profile.backend == "serial":
        return None
    session = Session(profile)
    link = session.dashboard_link
    print(f"sweepkit: started {session.describe()}" + (f"; dashboard: {link}" if link else ""), file=sys.stderr)
    return session


def active_session() -> Session | None:
    """The session sweeps run on now, or None to run serially.

    Outside any ``with sweep_cluster``, a profile named on the command line
    (``sweepkit run --cluster``) or in ``$SWEEPKIT_CLUSTER`` starts on the first
    sweep that needs it and stays up for the next ones.
    """
    if in_task():  # a sweep inside a task runs serially, on that task's worker
        return None
    if _stack:
        return _stack[-1]
    name = profiles.CLI_PROFILE or os.environ.get("SWEEPKIT_CLUSTER")
    if not name:
        return None
    with _lock:
        if name not in _implicit:
            _implicit[name] = start(profiles.resolve(name))
            if _implicit[name] is not None:
                atexit.register(_implicit[name].close)
        return _implicit[name]


def close_implicit() -> None:
    """Shut down the sessions that started on first use."""
    with _lock:
        for session in _implicit.values():
            if session is not None:
                session.close()
        _implicit.clear()
