"""The sge and slurm backends against the REAL schedulers of this machine.

Start them with ``bash tests/schedulers/sge.sh start`` and ``bash tests/schedulers/slurm.sh
start``. A scheduler that does not answer fails these tests (it never skips them),
unless SWEEPKIT_SKIP_SCHEDULERS=1. Everything stays on loopback (interface lo).
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import pandas as pd
import pytest

from sweepkit import ClusterError, TaskError, grid, sweep, sweep_cluster
from sweepkit.backends import backend_for
from sweepkit.backends.jobqueue import SCHEDULER_PLACEHOLDER
from sweepkit.profiles import resolve
from sweepkit.store import records

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "recipes"))  # before any cluster starts: workers import the recipe too
import elastic_net_simulation as enet  # noqa: E402

SEED = 2024
DATA = enet.make_data("simulated", n_samples=300, n_features=50, n_informative=5, noise=2.0, seed=SEED)
TASKS = enet.tasks(n_runs=100, alpha=0.2)  # 300 fits: 100 bootstrap resamples x 3 models

SCHEDULERS = {  # how to tell it answers, list our jobs, delete a job
    "sge": {"ping": ["qstat"], "list": ["qstat", "-u", getpass.getuser()], "cancel": "qdel"},
    "slurm": {"ping": ["scontrol", "ping"], "list": ["squeue", "--noheader", "--format", "%i"], "cancel": "scancel"},
}


def require(kind: str) -> None:
    """Fail loudly if the scheduler does not answer (skip only if SWEEPKIT_SKIP_SCHEDULERS=1)."""
    if os.environ.get("SWEEPKIT_SKIP_SCHEDULERS") == "1":
        pytest.skip("SWEEPKIT_SKIP_SCHEDULERS=1")
    ping = SCHEDULERS[kind]["ping"]
    try:
        proc = subprocess.run(ping, capture_output=True, text=True, timeout=30)
        up = proc.returncode == 0 and (kind != "slurm" or " UP" in proc.stdout)
        problem = None if up else proc.stdout + proc.stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(
            f"{kind} does not answer ({' '.join(ping)}: {problem.strip()}). Start it with "
            f"`bash tests/schedulers/{kind}.sh start`, or set SWEEPKIT_SKIP_SCHEDULERS=1 to skip these tests.",
            pytrace=False,
        )


@pytest.fixture(params=[pytest.param("sge", marks=pytest.mark.sge), pytest.param("slurm", marks=pytest.mark.slurm)])
def scheduler(request) -> str:
    require(request.param)
    return request.param


def options(tmp_path: Path, **overrides) -> dict:
    """Loopback only, this test's own log and scratch folders, small workers."""
    return {
        "workers": 2, "memory": "1GiB", "interface": "lo", "dashboard-address": "127.0.0.1:0",
        "log-directory": str(tmp_path / "logs"), "local-directory": str(tmp_path / "scratch"),
        "startup-timeout": 120, **overrides,
    }


def fit(model, replicate, alpha, rng, X, y, X_test, y_test, beta, pause: float = 0.0, gate: str | None = None) -> dict:
    """The recipe's fit, plus a draw from the task's own random stream and the job it ran in.
    ``pause`` and ``gate`` (a file: tasks wait while it exists) slow it down, results unchanged."""
    while gate is not None and os.path.exists(gate):
        time.sleep(0.02)
    time.sleep(pause)
    out = enet.fit_one(model, replicate, alpha, X, y, X_test, y_test, beta)
    out["draw"] = float(rng.standard_normal())
    out["job"] = os.environ.get("JOB_ID") or os.environ.get("SLURM_JOB_ID")
    return out


def explode(i: int) -> int:
    time.sleep(0.01)
    if i == 30:
        raise ValueError("task 30 explodes")
    return i


def run_fits(store: Path | None = None, **slow) -> pd.DataFrame:
    return sweep(fit, TASKS, shared={**DATA, **slow}, seed=SEED, store=store).to_frame()


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["duration", "worker", "job"])


@pytest.fixture(scope="module")
def serial() -> pd.DataFrame:
    with sweep_cluster("serial"):
        return run_fits()


def journal(session):
    return session.cluster._sweepkit_journal


def listed(kind: str, job_ids: list[str]) -> list[str]:
    """Those of ``job_ids`` the scheduler still lists."""
    out = subprocess.run(SCHEDULERS[kind]["list"], capture_output=True, text=True, check=True, timeout=30).stdout
    queued = {line.split()[0].split(".")[0] for line in out.splitlines() if line.strip()[:1].isdigit()}
    return [j for j in job_ids if j in queued]


def test_same_results_as_serially(scheduler, tmp_path, serial):
    profile = resolve(scheduler, options(tmp_path))
    printed = backend_for(scheduler).job_script(profile.options)  # what `sweepkit job-script` prints
    with sweep_cluster(scheduler, **options(tmp_path)) as session:
        frame = run_fits()
        jobs = list(journal(session).submitted)
        submitted = session.cluster.workers["sweepkit-0"].job_script()  # what qsub/sbatch received
        address = session.cluster.scheduler_address
    assert not listed(scheduler, jobs), "jobs left in the queue after leaving sweep_cluster"
    pd.testing.assert_frame_equal(comparable(frame), comparable(serial), check_exact=True)
    assert set(frame["worker"]) <= {"sweepkit-0", "sweepkit-1"} and set(frame["job"]) <= set(jobs)
    assert address.startswith("tcp://127.0.0.1:")
    assert submitted == printed.replace(SCHEDULER_PLACEHOLDER, address)


def test_a_deleted_worker_job_is_replaced_and_no_task_is_lost(scheduler, tmp_path, serial):
    """Once both workers have run tasks (so both hold the shared data), one's job is deleted.
    Tasks then wait at a gate until a replacement job has joined, so that it surely gets work."""
    store, gate = tmp_path / "run", tmp_path / "gate"
    deleted: dict = {}

    def delete_a_worker_job(session) -> None:
        log, submitted = store / "results.log", journal(session).submitted
        deadline = time.monotonic() + 90
        try:
            while not log.exists() or len({record[4] for record in records(log)}) < 2:
                assert time.monotonic() < deadline, "the two workers have not both run tasks after 90 s"
                time.sleep(0.05)
            gate.touch()
            names = {w["name"] for w in session.client.scheduler_info()["workers"].values()}
            job = next(job for name, job in session.cluster.workers.items() if name in names)
            deleted.update(job=job.job_id, before=set(submitted), done=len(list(records(log))))
            subprocess.run([SCHEDULERS[scheduler]["cancel"], job.job_id], check=True, capture_output=True, timeout=30)
            while len(submitted) == len(deleted["before"]) or len(session.client.scheduler_info()["workers"]) < 2:
                assert time.monotonic() < deadline, f"no replacement joined 90 s after job {job.job_id} was deleted"
                time.sleep(0.1)
        except BaseException as exc:
            deleted["error"] = exc
        finally:
            gate.unlink(missing_ok=True)

    with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}):
        with sweep_cluster(scheduler, **options(tmp_path, workers="2:2")) as session:
            session.client.wait_for_workers(2, timeout=120)
            session.client.run(enet.make_model, "lasso", 1.0)  # import scikit-learn on both workers now
            killer = threading.Thread(target=delete_a_worker_job, args=(session,), daemon=True)
            killer.start()
            frame = run_fits(store=store, pause=0.02, gate=str(gate))
            killer.join(timeout=60)
            jobs = list(journal(session).submitted)
    assert "error" not in deleted, deleted.get("error")
    assert not listed(scheduler, jobs), "jobs left in the queue after leaving sweep_cluster"
    assert 0 < deleted["done"] < len(TASKS) / 2, "the job was not deleted early in the sweep"

    pd.testing.assert_frame_equal(comparable(frame), comparable(serial), check_exact=True)
    stored = sorted(record[0] for record in records(store / "results.log"))
    assert stored == list(range(len(TASKS))), "a task is missing or was recorded twice"
    assert frame["status"].eq("ok").all()

    replacements = set(jobs) - deleted["before"]
    assert deleted["job"] in jobs and replacements, f"no job was submitted after {deleted['job']} was deleted"
    ran_in = set(frame["job"])
    assert ran_in & replacements, f"no task ran in a replacement job {replacements} (tasks ran in jobs {ran_in})"


def test_leaving_by_an_exception_leaves_no_job(scheduler, tmp_path):
    with pytest.raises(TaskError, match="task 30 explodes"):
        with sweep_cluster(scheduler, **options(tmp_path)) as session:
            try:
                sweep(explode, grid(i=range(200)), batch_size=5)
            finally:
                jobs = list(journal(session).submitted)
    assert len(jobs) == 2
    assert not listed(scheduler, jobs), "jobs left in the queue after an exception"


@pytest.mark.sge
def test_an_adaptive_cluster_from_zero_workers_runs_sweeps(tmp_path):
    """A sweep waits for a first worker before it sends work: the cluster keeps one."""
    require("sge")
    with sweep_cluster("sge", **options(tmp_path, workers="0:2")) as session:
        results = sweep(explode, grid(i=range(20)))
        jobs = list(journal(session).submitted)
    assert results.to_list() == list(range(20))
    assert jobs and not listed("sge", jobs)


def fails_fast(scheduler: str, tmp_path: Path, reason: str, **overrides) -> None:
    """A small sweep on a cluster whose workers cannot come: a ClusterError that quotes
    ``reason`` (a regex) within 30 s, and no job left behind."""
    started, jobs = time.monotonic(), []
    with pytest.raises(ClusterError, match=reason) as error:
        with sweep_cluster(scheduler, **options(tmp_path, **overrides)) as session:
            try:
                sweep(explode, grid(i=range(4)))
            finally:
                jobs = list(journal(session).submitted)
    took = time.monotonic() - started
    assert took < 30, f"took {took:.0f} s: {error.value}"
    assert not listed(scheduler, jobs), "jobs left in the queue"


def test_an_impossible_request_fails_at_once_with_the_schedulers_reason(scheduler, tmp_path):
    reason = {
        "sge": r'SGE can never start worker job \d+: Job \d+ \(-l mem_free=500G\) cannot run at host "[^"]+" '
        r"because it offers only hc:mem_free=",
        "slurm": r"sbatch refused the worker job: sbatch: error: Memory specification can not be satisfied",
    }[scheduler]
    fails_fast(scheduler, tmp_path, reason, memory="500GiB")


def test_jobs_that_end_without_a_worker_are_reported_with_their_log(scheduler, tmp_path):
    reason = r"(?s)every worker job ended before its worker connected.*/nonexistent/python: No such file or directory"
    fails_fast(scheduler, tmp_path, reason, python="/nonexistent/python")


@pytest.mark.sge
def test_a_job_in_sge_error_state_is_reported(tmp_path):
    require("sge")
    reason = r"SGE put worker job \d+ in error state \(Eqw\): .*can't open output file \"/nonexistent/folder/\""
    fails_fast("sge", tmp_path, reason, job_directives=["-o /nonexistent/folder/"])  # SGE cannot write the job's output
