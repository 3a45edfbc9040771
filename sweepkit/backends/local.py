"""Workers on this machine, each a separate program (``dask spec`` with a nanny).

Unlike ``distributed.LocalCluster``, workers are not forked or spawned from the
user's script, so a script without an ``if __name__ == "__main__":`` guard
works, and functions travel to local workers exactly as they do to workers on a
batch cluster. Workers run in their own session (a Ctrl-C reaches only the
driver, which shuts them down in order) and exit if the driver dies.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from typing import Any

import psutil
from dask.utils import parse_bytes
from distributed import Scheduler, SpecCluster
from distributed.deploy.subprocess import Subprocess

from ..cluster import ClusterError
from . import COMMON, Backend, worker_environment


class LocalWorker(Subprocess):
    """A nanny and its worker, started as ``python -m dask spec``.

    Its stderr is passed through to ours, and its last lines are kept: if the worker
    dies while starting, the error says why.
    """

    def __init__(self, scheduler: str, name: str, nanny: dict[str, Any], env: dict[str, str]):
        self.scheduler, self.name, self.nanny, self.env = scheduler, name, nanny, env
        self.last_lines: collections.deque[str] = collections.deque(maxlen=12)
        self.closing = False  # from then on, what the worker says about its shutdown is not shown
        super().__init__()

    async def _start(self) -> None:
        spec = json.dumps({"cls": "distributed.Nanny", "opts": {**self.nanny, "name": self.name}})
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dask", "spec", self.scheduler, "--spec", spec, env=self.env,
            stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        self._relay = asyncio.ensure_future(self._relay_stderr(self.process.stderr))

    async def _relay_stderr(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace")
            self.last_lines.append(line.rstrip())
            if not self.closing:
                sys.stderr.write(line)

    def failure(self) -> str | None:
        """Why this worker's process ended, if it did."""
        if self.process is None or self.process.returncode is None:
            return None
        tail = "\n".join(self.last_lines)
        return f"local worker {self.name} exited with code {self.process.returncode}" + (f"; its last words:\n{tail}" if tail else "")

    async def close(self) -> None:
        """Stop the nanny and its worker: politely (SIGTERM to the process group), then for good."""
        if self.process and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=5)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        self.process = None
        await super(Subprocess, self).close()


class LocalBackend(Backend):
    name = "local"
    defaults = {**COMMON, "memory": "auto", "startup-timeout": 60}

    def validate(self, options: dict[str, Any]) -> dict[str, Any]:
        options = super().validate(options)
        options["workers"] = options["workers"] or (os.cpu_count() or 1,) * 2  # one per core
        if options["memory"] not in (None, "auto"):
            try:
                parse_bytes(str(options["memory"]))
            except ValueError:
                raise ValueError(f"option 'memory' must be a size such as 4GiB or 500MB, or auto; got {options['memory']!r}") from None
        return options

    def start(self, options: dict[str, Any]):
        low, high = options["workers"]
        scratch = tempfile.mkdtemp(prefix="sweepkit-local-")
        env = {k: v for k, v in os.environ.items() if k not in ("SWEEPKIT_CLUSTER", "MALLOC_TRIM_THRESHOLD_")}
        env.update(worker_environment(options), SWEEPKIT_PARENT_PID=str(os.getpid()), SWEEPKIT_SCRATCH=scratch)
        nanny = {
            "nthreads": options["threads"],
            "memory_limit": _memory_per_worker(options["memory"], high),
            "local_directory": scratch,
            "host": "127.0.0.1",
        }
        worker = {"cls": LocalWorker, "options": {"nanny": nanny, "env": env}}
        scheduler = {
            "cls": Scheduler,
            "options": {"host": "127.0.0.1", "port": 0, "dashboard_address": options["dashboard-address"]},
        }
        cluster = None
        try:
            with warnings.catch_warnings():  # "Port 8787 is already in use": we print the address used
                warnings.filterwarnings("ignore", message="Port .* is already in use")
                cluster = SpecCluster(
                    workers={i: worker for i in range(max(low, 1))},
                    scheduler=scheduler, worker=worker, name="sweepkit-local", silence_logs=logging.ERROR,
                )
            cluster._sweepkit_scratch = scratch
            if low != high:  # at least one worker stays: a sweep waits for one before it sends work
                cluster.adapt(minimum=max(low, 1), maximum=high)
            self._wait_for_workers(cluster, max(low, 1), float(options["startup-timeout"]))
            return cluster
        except BaseException:
            if cluster is not None:
                cluster.close()
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    def _wait_for_workers(self, cluster, n: int, timeout: float) -> None:
        """Like LocalCluster: return once ``n`` workers are up, or say why they are not."""
        deadline = time.monotonic() + timeout
        while len(cluster.scheduler.workers) < n:
            problem = self.diagnose(cluster)
            if problem:
                raise ClusterError(problem)
            if time.monotonic() > deadline:
                raise ClusterError(f"{n - len(cluster.scheduler.workers)} of {n} local workers did not start within {timeout:.0f} s")
            time.sleep(0.05)

    def diagnose(self, cluster) -> str | None:
        if cluster.scheduler.workers:
            return None
        failures = [w.failure() for w in cluster.workers.values() if isinstance(w, LocalWorker)]
        return next((f for f in failures if f), None)

    def closing(self, cluster) -> None:
        for worker in cluster.workers.values():  # their goodbyes (heartbeats to a closed scheduler) are noise
            if isinstance(worker, LocalWorker):
                worker.closing = True

    def cleanup(self, cluster) -> None:
        shutil.rmtree(getattr(cluster, "_sweepkit_scratch", ""), ignore_errors=True)


def _memory_per_worker(memory: Any, workers: int) -> int | str:
    if memory in (None, "auto"):
        return int(psutil.virtual_memory().total / max(workers, 1))
    return memory
