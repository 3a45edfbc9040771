"""Preloaded into every sweepkit worker's nanny (``distributed.nanny.preload``).

- ``distributed`` sets ``MALLOC_TRIM_THRESHOLD_`` for every worker. Setting it
  at all turns off glibc's adaptive mmap threshold, which made small
  allocation-heavy fits (numpy, scikit-learn) about 25% slower on our benchmark
  machine. sweepkit leaves glibc's default unless the profile's ``env`` sets it.
- Local workers exit when the process that started them dies (even by SIGKILL),
  so an interrupted driver never leaves workers behind.
"""

from __future__ import annotations

import os
import shutil
import threading
import time


def dask_setup(nanny) -> None:
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:  # not asked for explicitly
        nanny.pre_spawn_env.pop("MALLOC_TRIM_THRESHOLD_", None)
        nanny.env.pop("MALLOC_TRIM_THRESHOLD_", None)
    parent = os.environ.get("SWEEPKIT_PARENT_PID")
    if parent:
        threading.Thread(target=_exit_with_parent, args=(int(parent),), daemon=True, name="sweepkit-parent-watch").start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    shutil.rmtree(os.environ.get("SWEEPKIT_SCRATCH", ""), ignore_errors=True)  # the cluster's scratch folder
    os._exit(0)  # the worker process follows: it exits when its nanny's pipe closes
