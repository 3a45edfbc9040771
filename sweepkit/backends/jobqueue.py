"""Workers as batch jobs on Son of Grid Engine, Slurm, PBS or LSF (via dask-jobqueue).

Each Dask worker process is one batch job that asks the scheduler for the
worker's threads (cores) and memory. Batch jobs do not inherit the driver's
environment, so the job script exports what workers need (the driver's import
path, lean Dask settings, the profile's ``env``; never a copy of the driver's
environment), changes to the driver's working directory, and runs the worker
with the driver's Python. A scheduler is a few class attributes, as in
dask-jobqueue, and a way to tell why a queued job cannot start.

``diagnose`` explains why no worker arrives, in the scheduler's own words: a
refused submission (``sbatch: error: ...``), a job the scheduler can never start
(SGE's ``qalter -w v`` verification, Slurm's pending reason), a job in SGE's error
state, or jobs that ended before their worker connected (the tail of their log).
A busy queue is not an error. On close, every job this cluster submitted is
cancelled and gone from the queue.
"""

from __future__ import annotations

import functools
import getpass
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
from dask.utils import parse_bytes, parse_timedelta
from dask_jobqueue import JobQueueCluster
from dask_jobqueue.core import Job
from dask_jobqueue.lsf import LSFJob
from dask_jobqueue.pbs import PBSJob
from dask_jobqueue.sge import SGEJob
from dask_jobqueue.slurm import SLURMJob
from distributed.core import Status

from . import COMMON, Backend, worker_environment

logger = logging.getLogger(__name__)

# What ``job_script`` prints where the address of the running Dask scheduler goes.
SCHEDULER_PLACEHOLDER = "tcp://<insert-scheduler-address-here>:8786"
CHECK_EVERY = 5.0  # seconds between two queries to the batch scheduler
COMMAND_TIMEOUT = 30.0

JOBQUEUE = {
    **COMMON,
    "workers": 4,
    "memory": "4GiB",
    "walltime": None,  # the queue's default
    "job-prologue": [],
    "job-directives": [],
    "interface": None,
    "log-directory": "sweepkit-logs",
    "local-directory": None,
    "python": None,  # the driver's interpreter (sys.executable)
    "startup-timeout": 600,
}


@dataclass
class Journal:
    """What the jobs of one cluster did, for ``diagnose`` and ``cleanup``."""

    log_directory: str | None = None
    submitted: list[str] = field(default_factory=list)  # job ids, in order
    cancelled: set[str] = field(default_factory=set)  # jobs the cluster itself cancelled
    refused: list[str] = field(default_factory=list)  # the submit command's error output
    connected: bool = False  # a worker has connected (its replacement may be on the way)
    checked: float = float("-inf")  # when the batch scheduler was last queried
    gone_since: float | None = None  # since when no job of ours is in the queue


class _JournaledJob:
    """Mixed into a dask-jobqueue Job: records job ids and refused submissions."""

    def __init__(self, *args: Any, journal: Journal | None = None, **kwargs: Any):
        self.journal = journal
        super().__init__(*args, **kwargs)

    async def start(self) -> None:
        try:
            await super().start()
        except RuntimeError as exc:  # the submit command failed; dask-jobqueue only logs it
            self.status = Status.failed  # so that closing the cluster does not trip on this job
            if self.journal is not None:
                text = str(exc)
                self.journal.refused.append("; ".join(text.partition("stderr:\n")[2].split("\n")).strip("; ") or text)
            raise
        if self.journal is not None and self.job_id:
            self.journal.submitted.append(self.job_id)

    async def close(self) -> None:
        if self.journal is not None and self.job_id:
            self.journal.cancelled.add(self.job_id)
        await super().close()


class JobQueueBackend(Backend):
    """One batch scheduler: subclasses set the class attributes below, and may explain queued jobs."""

    job_cls: type[Job]  # dask-jobqueue's Job for this scheduler
    renamed: dict[str, str] = {}  # profile option -> the Job keyword it sets
    list_jobs: tuple[str, ...] = ()  # lists the user's jobs, one per line starting with its id
    walltime_directive = ""  # how the job script asks for a run time
    defaults = JOBQUEUE

    # -- options -------------------------------------------------------------------------
    def validate(self, options: dict[str, Any]) -> dict[str, Any]:
        options = super().validate(options)
        options["workers"] = options["workers"] or (4, 4)
        if not options.get("memory"):
            raise ValueError(f"the {self.name} backend needs option 'memory' (per worker, e.g. 4GiB): jobs request it")
        parse_bytes(str(options["memory"]))  # a clear error now, not in a callback
        if isinstance(options.get("walltime"), int):  # YAML reads an unquoted 08:00:00 as 28800 (seconds)
            hours, rest = divmod(options["walltime"], 3600)
            options["walltime"] = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
        for key in ("job-prologue", "job-directives"):
            value = options.get(key) or []
            options[key] = [value] if isinstance(value, str) else [str(v) for v in value]
        for name in options.get("env") or {}:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
                raise ValueError(f"option 'env': {name!r} is not a valid environment variable name")
        return options

    def job_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        """dask-jobqueue keywords for one worker job (every one set, so no config file changes the script)."""
        threads = options["threads"]
        memory = parse_bytes(str(options["memory"]))
        log_directory = options.get("log-directory")
        kwargs: dict[str, Any] = dict(
            cores=threads,
            processes=1,
            memory=memory,
            walltime=options.get("walltime"),
            job_name="sweepkit-worker",
            python=options.get("python") or sys.executable,
            log_directory=os.path.abspath(os.path.expanduser(log_directory)) if log_directory else None,
            local_directory=options.get("local-directory"),
            job_script_prologue=self.prologue(options),
            job_extra_directives=list(options["job-directives"]),
            job_directives_skip=[] if options.get("walltime") else [self.walltime_directive],  # the queue's default
            worker_extra_args=[],
            worker_command="distributed.cli.dask_worker",
            shebang="#!/usr/bin/env bash",
            death_timeout=60,
            nanny=True,
        )
        kwargs.update({keyword: options.get(option) for option, keyword in self.renamed.items()})
        # SGE asks for cores through a parallel environment, and counts consumables per slot.
        slots = threads if threads > 1 and options.get("parallel-environment") else 1
        if slots > 1:
            kwargs["job_extra_directives"].insert(0, f"-pe {options['parallel-environment']} {slots}")
        if options.get("memory-resource"):
            kwargs["resource_spec"] = f"{options['memory-resource']}={_sge_bytes(-(-memory // slots))}"
        return kwargs

    def prologue(self, options: dict[str, Any]) -> list[str]:
        """Job script lines before the worker starts: its environment, the driver's folder, the profile's lines."""
        env = worker_environment(options)
        lines = [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
        lines.append(f"cd {shlex.quote(os.getcwd())}")
        return lines + options["job-prologue"]

    @functools.cached_property
    def journaled_job_cls(self) -> type[Job]:
        return type(self.job_cls.__name__, (_JournaledJob, self.job_cls), {})

    # -- the cluster -----------------------------------------------------------------------
    def start(self, options: dict[str, Any]) -> JobQueueCluster:
        kwargs = self.job_kwargs(options)
        journal = Journal(log_directory=kwargs["log_directory"])
        cluster = JobQueueCluster(
            job_cls=self.journaled_job_cls,
            name="sweepkit",
            interface=options.get("interface"),
            scheduler_options={"dashboard_address": options.get("dashboard-address")},
            silence_logs="error",
            journal=journal,
            **kwargs,
        )
        cluster._sweepkit_journal = journal
        low, high = options["workers"]
        # Adaptive even for a fixed number: a worker whose job ends (walltime, preemption,
        # a node failure, qdel) is replaced lost-worker-timeout later. The sweep keeps a
        # second or two of work per worker in flight: count that as demand for workers.
        # At least one worker stays: a sweep waits for one before it sends any work.
        cluster.adapt(minimum=max(low, 1), maximum=high, target_duration="1s")
        return cluster

    def job_script(self, options: dict[str, Any]) -> str:
        """The script each worker job runs, built without starting a Dask scheduler:
        only the scheduler's address (a placeholder here) and the worker number differ."""
        job = self.job_cls(
            SCHEDULER_PLACEHOLDER, name="sweepkit-0", interface=options.get("interface"), **self.job_kwargs(options)
        )
        return job.job_script()

    def cleanup(self, cluster: JobQueueCluster) -> None:
        """Cancel any job of this cluster still queued (dask-jobqueue already tried) and
        wait, up to 30 s, until the scheduler no longer lists them."""
        journal: Journal | None = getattr(cluster, "_sweepkit_journal", None)
        if journal is None or not journal.submitted:
            return
        deadline, cancelled = time.monotonic() + 30, False
        try:
            while left := _listed(journal.submitted, self.queued()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jobs {' '.join(left)} are still listed 30 s after being cancelled")
                if not cancelled:
                    _run([*shlex.split(self.job_cls.cancel_command), *left], check=False)
                    cancelled = True
                time.sleep(0.5)
        except RuntimeError as exc:  # never hide the error that made the sweep stop
            print(f"sweepkit: cancelling the {self.name} worker jobs: {exc}", file=sys.stderr)

    # -- why workers do not come -----------------------------------------------------------
    def diagnose(self, cluster: JobQueueCluster) -> str | None:
        journal: Journal | None = getattr(cluster, "_sweepkit_journal", None)
        if journal is None:
            return None
        if cluster.scheduler_info.get("workers"):
            journal.connected, journal.gone_since = True, None
            return None  # workers at work: a job still queued is only waiting its turn
        if journal.refused:
            return f"{self.job_cls.submit_command} refused the worker job: {journal.refused[-1]}"
        now = time.monotonic()
        if now - journal.checked < CHECK_EVERY or not journal.submitted:
            return None
        journal.checked = now
        try:
            queued = self.queued()
            ours = _listed(journal.submitted, queued)
            for job_id in ours[-1:]:  # the jobs are alike: one question to the scheduler is enough
                problem = self.explain_queued(job_id, queued[job_id])
                if problem:
                    return problem
        except RuntimeError as exc:  # the scheduler did not answer this time: not the sweep's fault
            logger.warning("sweepkit: %s", exc)
            return None
        ended = [j for j in journal.submitted if j not in queued and j not in journal.cancelled]
        if ours or not ended:
            journal.gone_since = None
            return None
        # No worker, and no job of ours queued or running. The cluster resubmits a job
        # lost-worker-timeout after its worker left: give it that long, and more.
        journal.gone_since = journal.gone_since or now
        grace = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout")) + 2 * CHECK_EVERY
        if journal.connected and now - journal.gone_since < grace:
            return None
        what = "no worker is left and no job of this cluster is queued or running" if journal.connected else (
            "every worker job ended before its worker connected"
        )
        return f"{what} (last job {ended[-1]}). " + self.log_tail(journal.log_directory, ended[-1])

    def queued(self) -> dict[str, str]:
        """The user's jobs the scheduler lists now: job id -> its line."""
        try:
            out = _run([part.format(user=getpass.getuser()) for part in self.list_jobs])
        except RuntimeError as exc:  # LSF's bjobs fails when there is no job
            if "No unfinished job found" not in str(exc):
                raise
            out = ""
        found = (re.match(r"\s*(\d+)\S*\s*(.*)", line) for line in out.splitlines())
        return {m.group(1): m.group(2) for m in found if m}

    def explain_queued(self, job_id: str, line: str) -> str | None:
        """Why a listed job can never start a worker, in the scheduler's words (None: it may)."""
        return None

    @staticmethod
    def log_tail(folder: str | None, job_id: str, lines: int = 8) -> str:
        """The last lines of a job's log (the newest file in ``folder`` naming the job id)."""
        try:
            logs = sorted(Path(folder).glob(f"*{job_id}*"), key=lambda p: p.stat().st_mtime) if folder else []
            tail = "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else ""
        except OSError as exc:
            return f"Its log could not be read: {exc}."
        if not logs:
            return f"No log of the job found{f' in {folder}' if folder else ' (set option log-directory)'}."
        return f"End of its log {logs[-1]}:\n{tail}"


class SGEBackend(JobQueueBackend):
    name = "sge"
    job_cls = SGEJob
    walltime_directive = "-l h_rt="
    renamed = {"queue": "queue", "project": "project"}
    list_jobs = ("qstat", "-u", "{user}")
    defaults = {
        **JOBQUEUE, "queue": None, "project": None, "memory-resource": "mem_free", "parallel-environment": "smp",
    }

    def explain_queued(self, job_id: str, line: str) -> str | None:
        state = line.split()[3] if len(line.split()) > 3 else ""  # prior name user state ...
        if "E" in state:  # error state: qstat -j says why, e.g. "can't open output file"
            reasons = _lines(_run(["qstat", "-j", job_id]), r"^error reason")
            return f"SGE put worker job {job_id} in error state ({state}): " + _join(reasons)
        if state.startswith("q"):  # waiting: would it start on an empty cluster?
            out = _run(["qalter", "-w", "v", job_id], check=False)
            if "no suitable queues" in out:
                return f"SGE can never start worker job {job_id}: " + _join(_lines(out, r"cannot run|no suitable"))
        return None


class SlurmBackend(JobQueueBackend):
    name = "slurm"
    job_cls = SLURMJob
    walltime_directive = "-t "
    renamed = {"partition": "queue", "account": "account"}
    list_jobs = ("squeue", "--noheader", "--user", "{user}", "--format", "%i %t %r")
    defaults = {**JOBQUEUE, "partition": None, "account": None}

    # Pending reasons that will not go away while the request stays as it is.
    NEVER = re.compile(
        r"BadConstraints|PartitionConfig|PartitionNodeLimit|PartitionTimeLimit|InvalidAccount|InvalidQOS"
        r"|AccountNotAllowed|QOSNotAllowed|DependencyNeverSatisfied|(Assoc|QOS)Max\w*PerJob\w*"
    )

    def explain_queued(self, job_id: str, line: str) -> str | None:
        state, _, reason = line.partition(" ")
        if state == "PD" and self.NEVER.fullmatch(reason.strip()):
            return f"Slurm keeps worker job {job_id} pending with reason {reason.strip()}: it cannot start as requested"
        return None


class PBSBackend(JobQueueBackend):
    name = "pbs"
    job_cls = PBSJob
    walltime_directive = "walltime="
    renamed = {"queue": "queue", "account": "account"}
    list_jobs = ("qstat", "-u", "{user}")
    defaults = {**JOBQUEUE, "queue": None, "account": None}


class LSFBackend(JobQueueBackend):
    name = "lsf"
    job_cls = LSFJob
    walltime_directive = "-W "
    renamed = {"queue": "queue", "project": "project"}
    list_jobs = ("bjobs", "-noheader", "-u", "{user}")
    defaults = {**JOBQUEUE, "queue": None, "project": None}


def _run(cmd: list[str], check: bool = True) -> str:
    """stdout and stderr of a scheduler command; a failure (with ``check``) is a RuntimeError."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{' '.join(cmd)} failed: {exc}") from None
    if check and proc.returncode != 0:
        output = proc.stderr.strip() or proc.stdout.strip()
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {output}")
    return proc.stdout + proc.stderr


def _listed(job_ids: list[str], queued: dict[str, str]) -> list[str]:
    return [j for j in job_ids if j in queued]


def _lines(text: str, pattern: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if re.search(pattern, line.strip())]


def _join(lines: list[str], most: int = 3) -> str:
    more = f" (and {len(lines) - most} more)" if len(lines) > most else ""
    return "; ".join(lines[:most]) + more if lines else "(no reason given)"


def _sge_bytes(n: int) -> str:
    """SGE's memory units: K, M, G are powers of 1024 (2GiB -> "2G")."""
    for unit, size in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return f"{-(-n // 2**20)}M"
