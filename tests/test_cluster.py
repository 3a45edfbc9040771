"""sweep_cluster and profiles: precedence, clear errors, and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from conftest import run_script

import sweepkit
from sweepkit import profiles


@pytest.fixture
def profile_dir(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("backend: local\nworkers: 3\nthreads: 2\n")
    monkeypatch.setenv("SWEEPKIT_CLUSTERS", str(tmp_path))
    monkeypatch.delenv("SWEEPKIT_WORKERS", raising=False)
    monkeypatch.setattr(profiles, "CLI_OPTIONS", {})
    monkeypatch.setattr(profiles, "CLI_PROFILE", None)
    return tmp_path


def test_precedence_call_over_cli_over_environment_over_file_over_default(profile_dir, monkeypatch):
    p = profiles.resolve("mine")
    assert p.options["workers"] == (3, 3) and p.options["threads"] == 2 and p.options["memory"] == "auto"
    assert p.origin["memory"] == "built-in default" and p.origin["workers"].startswith("profile file")
    monkeypatch.setenv("SWEEPKIT_WORKERS", "4")
    assert profiles.resolve("mine").options["workers"] == (4, 4)
    monkeypatch.setattr(profiles, "CLI_OPTIONS", {"workers": 5})
    assert profiles.resolve("mine").options["workers"] == (5, 5)
    p = profiles.resolve("mine", {"workers": "1:6"})
    assert p.options["workers"] == (1, 6) and p.origin["workers"] == "sweep_cluster() argument"
    assert p.options["threads"] == 2


def test_profile_name_from_cli_then_environment_then_local(profile_dir, monkeypatch):
    monkeypatch.delenv("SWEEPKIT_CLUSTER", raising=False)
    assert profiles.resolve().name == "local"
    monkeypatch.setenv("SWEEPKIT_CLUSTER", "serial")
    assert profiles.resolve().name == "serial"
    monkeypatch.setattr(profiles, "CLI_PROFILE", "mine")
    assert profiles.resolve().name == "mine"
    assert profiles.resolve("local").name == "local"


def test_unknown_profile_lists_the_known_ones_and_suggests_the_closest(profile_dir):
    with pytest.raises(sweepkit.ProfileError) as err:
        with sweepkit.sweep_cluster("locl"):
            pass
    message = str(err.value)
    assert "unknown cluster profile 'locl'; did you mean 'local'?" in message
    assert "known profiles: " in message and "mine" in message and "serial" in message


def test_unknown_option_and_bad_values_are_clear(profile_dir):
    with pytest.raises(sweepkit.ProfileError, match="has no option 'wrokers'.*Did you mean 'workers'"):
        profiles.resolve("local", {"wrokers": 2})
    with pytest.raises(ValueError, match="option 'workers' must be a number"):
        profiles.resolve("local", {"workers": "many"})
    (profile_dir / "broken.yaml").write_text("workers: 2\n")
    with pytest.raises(sweepkit.ProfileError, match="must be a mapping with a 'backend:' key"):
        profiles.resolve("broken")


def test_profiles_are_listed_with_their_source(profile_dir):
    found = profiles.available()
    assert found["mine"] == [profile_dir / "mine.yaml"]
    assert {"serial", "local"} <= found.keys()


def test_dashboard_binds_to_loopback(local2):
    host = local2.dashboard_link.split("//")[1].split(":")[0]
    assert host == "127.0.0.1"
    info = local2.client.scheduler_info()
    assert all(addr.startswith("tcp://127.0.0.1:") for addr in info["workers"])


UNGUARDED = """
import sweepkit

def double(i):
    return 2 * i

with sweepkit.sweep_cluster("local", workers=2, dashboard_address="127.0.0.1:0"):
    results = sweepkit.sweep(double, sweepkit.grid(i=range(100)))
print("TOTAL", sum(results))
"""


def test_a_script_without_main_guard_just_works(tmp_path):
    done = run_script(tmp_path, UNGUARDED)
    assert done.returncode == 0, done.stderr
    assert "TOTAL 9900" in done.stdout
    assert "Traceback" not in done.stderr and "bootstrapping phase" not in done.stderr


def test_environment_picks_a_profile_without_code_change(tmp_path):
    source = """
    import sweepkit
    results = sweepkit.sweep(lambda i: i, sweepkit.grid(i=range(20)))
    print("WORKERS", sorted(set(results.to_frame()["worker"])))
    """
    done = run_script(tmp_path, source, env={"SWEEPKIT_CLUSTER": "local", "SWEEPKIT_WORKERS": "2", "SWEEPKIT_DASHBOARD_ADDRESS": "127.0.0.1:0"})
    assert done.returncode == 0, done.stderr
    assert "WORKERS ['0', '1']" in done.stdout
    serial = run_script(tmp_path, source, env={"SWEEPKIT_CLUSTER": "serial"})
    assert "WORKERS ['local process']" in serial.stdout


INTERRUPTED = """
import json, os, sys, time
import sweepkit

def nap(i):
    time.sleep(0.2)
    return i

with sweepkit.sweep_cluster("local", workers=2, dashboard_address="127.0.0.1:0") as session:
    session.client.wait_for_workers(2)
    pids = list(session.client.run(os.getpid).values())
    pids += [p.pid for p in __import__("psutil").Process().children(recursive=True)]
    print(json.dumps(pids), flush=True)
    sweepkit.sweep(nap, sweepkit.grid(i=range(10_000)), batch_size=1)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupting_the_driver_leaves_no_worker_behind(tmp_path, sig):
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent(INTERRUPTED))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = json.loads(proc.stdout.readline())
    assert len(pids) >= 4, pids  # two workers and their nannies
    time.sleep(1.0)  # the sweep is running
    proc.send_signal(sig)
    proc.wait(timeout=60)
    stderr = proc.stderr.read()
    deadline = time.monotonic() + 15
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"worker processes still running after {sig.name}: {alive}"
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in stderr
        assert stderr.count("Traceback") == 1, stderr  # the interrupt's own, not a page of worker tracebacks


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_leaving_on_an_exception_closes_everything(tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(RuntimeError, match="boom"):
        with sweepkit.sweep_cluster("local", workers=2, dashboard_address="127.0.0.1:0") as session:
            session.client.wait_for_workers(2)
            raise RuntimeError("boom")
    assert session.closed and session.client.status == "closed"
    time.sleep(0.5)
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and _alive(p.pid)]
    assert not left
    assert not os.environ.get("MALLOC_TRIM_THRESHOLD_"), "starting a cluster must not change the driver's environment"


def test_a_missing_extra_says_what_to_install(monkeypatch):
    from sweepkit.backends import BACKENDS, backend_for
    from sweepkit.extras import require

    with pytest.raises(ModuleNotFoundError, match=r'not installed; it comes with sweepkit\'s \'recipes\' extra: pip install "sweepkit\[recipes\]"'):
        require("no_such_module_xyz", "recipes")
    monkeypatch.setitem(BACKENDS, "fake", ("no_such_backend_module", "Backend", "sge"))
    with pytest.raises(ModuleNotFoundError, match=r'the \'fake\' backend needs no_such_backend_module.*pip install "sweepkit\[sge\]"'):
        backend_for("fake")


def test_workers_that_cannot_start_fail_fast_with_their_own_error():
    start = time.monotonic()
    with pytest.raises(sweepkit.ClusterError) as err:
        with sweepkit.sweep_cluster("local", workers=2, dashboard_address="127.0.0.1:0", env={"PYTHONHOME": "/nonexistent"}):
            pass
    assert time.monotonic() - start < 20
    assert "local worker" in str(err.value) and "exited with code" in str(err.value)
    assert "PYTHONHOME" in str(err.value) or "encodings" in str(err.value)  # the worker's own last words


def test_bad_option_values_are_refused_before_any_worker_starts():
    with pytest.raises(ValueError, match="option 'memory' must be a size such as 4GiB"):
        with sweepkit.sweep_cluster("local", memory="lots"):
            pass
