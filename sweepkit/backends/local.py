"""Workers on this machine, each a separate program (``dask spec`` with a nanny).

Unlike ``distributed.LocalCluster``, workers are not forked or spawned from the
user's script, so a script without an ``if __name__ == "__main__":`` guard
works, and functions travel to local workers exactly as they do to workers on a
batch cluster. Workers run in their own session (a Ctrl-C reaches only the
driver, which shuts them down in order) and exit if the driver dies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
from typing import Any

import psutil
from distributed import Scheduler, SpecCluster
from distributed.deploy.subprocess import Subprocess

from . import COMMON, Backend, worker_environment


class LocalWorker(Subprocess):
    """A nanny and its worker, started as ``python -m dask spec``."""

    def __init__(self, scheduler: str, name: str, nanny: dict[str, Any], env: dict[str, str]):
        self.scheduler, self.name, self.nanny, self.env = scheduler, name, nanny, env
        super().__init__()

    async def _start(self) -> None:
        spec = json.dumps({"cls": "distributed.Nanny", "opts": {**self.nanny, "name": self.name}})
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dask", "spec", self.scheduler, "--spec", spec,
            env=self.env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
        )

    async def close(self) -> None:
        if self.process and self.process.returncode is None:
            try:
                children = psutil.Process(self.process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            for proc in children:
                proc.kill()
            self.process.kill()
            await self.process.wait()
        self.process = None
        await super(Subprocess, self).close()


class LocalBackend(Backend):
    name = "local"
    defaults = {**COMMON, "memory": "auto", "startup-timeout": 60}

    def validate(self, options: dict[str, Any]) -> dict[str, Any]:
        options = super().validate(options)
        options["workers"] = options["workers"] or (os.cpu_count() or 1,) * 2  # one per core
        return options

    def start(self, options: dict[str, Any]):
        low, high = options["workers"]
        scratch = tempfile.mkdtemp(prefix="sweepkit-local-")
        env = {k: v for k, v in os.environ.items() if k not in ("SWEEPKIT_CLUSTER", "MALLOC_TRIM_THRESHOLD_")}
        env.update(worker_environment(options), SWEEPKIT_PARENT_PID=str(os.getpid()))
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
        cluster = SpecCluster(
            workers={i: worker for i in range(low if low != high else high)},
            scheduler=scheduler, worker=worker, name="sweepkit-local", silence_logs=logging.ERROR,
        )
        cluster._sweepkit_scratch = scratch
        if low != high:  # at least one worker stays: a sweep waits for one before it sends work
            cluster.adapt(minimum=max(low, 1), maximum=high)
        return cluster

    def cleanup(self, cluster) -> None:
        shutil.rmtree(getattr(cluster, "_sweepkit_scratch", ""), ignore_errors=True)


def _memory_per_worker(memory: Any, workers: int) -> int | str:
    if memory in (None, "auto"):
        return int(psutil.virtual_memory().total / max(workers, 1))
    return memory
