"""The command line, as a new user meets it: run the main job, list profiles, get errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import pandas as pd
import pytest
from conftest import ROOT, comparable

SWEEPKIT = shutil.which("sweepkit", path=str(Path(sys.executable).parent)) or "sweepkit"


def sweepkit(*args: str, cwd: Path = ROOT, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([SWEEPKIT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})


def test_the_main_job_runs_from_the_command_line(tmp_path):
    done = sweepkit("run", "recipes/elastic_net_simulation.py", "--n-runs", "200", "--out", str(tmp_path / "enet"),
                    "--workers", "2", "--set", "dashboard-address=127.0.0.1:0")
    assert done.returncode == 0, done.stderr
    assert "sweepkit: started cluster 'local' (local, 2 workers); dashboard: http://127.0.0.1:" in done.stderr
    assert "600 fits (200 runs x 3 models), 0 failed; seed 2024" in done.stdout
    out = tmp_path / "enet"
    for name in ("results.parquet", "summary.csv", "selection_frequency.csv", "plot.png", "manifest.json"):
        assert (out / name).stat().st_size > 0, name
    summary = pd.read_csv(out / "summary.csv", index_col="model")
    assert summary.loc["lasso", "coef_error_mean"] < summary.loc["ridge", "coef_error_mean"]
    assert summary.loc["lasso", "true_positives_mean"] == 5
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"

    serial = sweepkit("run", "recipes/elastic_net_simulation.py", "--n-runs", "200", "--out", str(tmp_path / "serial"), "--cluster", "serial")
    assert serial.returncode == 0, serial.stderr
    pd.testing.assert_frame_equal(
        comparable(pd.read_parquet(out / "results.parquet")), comparable(pd.read_parquet(tmp_path / "serial" / "results.parquet")), check_exact=True
    )
    status = sweepkit("status", str(out))
    assert "done 600 of 600: 600 ok, 0 failed, 0 pending" in status.stdout and "fit_one  (" in status.stdout


def test_a_recipe_also_runs_as_a_plain_script(tmp_path):
    done = subprocess.run(
        [sys.executable, "recipes/elastic_net_simulation.py", "--n-runs", "10", "--out", str(tmp_path), "--cluster", "serial"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "30 fits (10 runs x 3 models)" in done.stdout


def test_recipe_help_lists_its_options():
    done = sweepkit("run", "recipes/elastic_net_simulation.py", "--help", "--cluster", "serial")
    assert done.returncode == 0, done.stderr
    assert "--n-runs N_RUNS" in done.stdout and "randomized runs (bootstrap replicates)" in done.stdout
    assert "{simulated,diabetes}" in done.stdout


def test_clusters_lists_profiles_with_their_files():
    done = sweepkit("clusters")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line and not line.startswith((" ", "Profiles"))}
    assert done.stdout.startswith("PROFILE  BACKEND") and {"local", "serial", "sge", "slurm"} <= lines.keys()
    assert "clusters/local.yaml" in lines["local"]
    search = done.stdout.splitlines()[-1]
    assert search.count(str(ROOT / "clusters")) == 1, "each folder once"
    shown = sweepkit("clusters", "--show", "local", SWEEPKIT_WORKERS="3")
    assert "workers: 3    # environment: SWEEPKIT_WORKERS" in shown.stdout and "threads: 1    # profile file" in shown.stdout


def test_errors_are_one_clear_line(tmp_path):
    unknown = sweepkit("run", "recipes/elastic_net_simulation.py", "--cluster", "sgee", "--n-runs", "3", "--out", str(tmp_path))
    assert unknown.returncode == 1
    assert "unknown cluster profile 'sgee'" in unknown.stderr and "Traceback" not in unknown.stderr
    missing = sweepkit("status", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "nothing does not exist" in missing.stderr
    (tmp_path / "plain").mkdir()
    not_a_store = sweepkit("status", str(tmp_path / "plain"))
    assert not_a_store.returncode == 1 and "is not a sweepkit store (no manifest.json)" in not_a_store.stderr
    local_script = sweepkit("job-script", "local")
    assert local_script.returncode == 1 and "submits no job script" in local_script.stderr


def test_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "sweepkit", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "run" in done.stdout and "verify" in done.stdout


def test_recipe_options_from_a_signature():
    from sweepkit.cli import run_recipe

    def main(sizes: list[int] = [1, 2], scale: float = 1.0, kind: Literal["a", "b"] = "a", fast: bool = False, name: str | None = None):
        return sizes, scale, kind, fast, name

    assert run_recipe(main, ["--sizes", "250", "1000", "--scale", "2", "--kind", "b", "--fast", "--cluster", "serial"]) == ([250, 1000], 2.0, "b", True, None)

    def bad(options: dict = {}):
        return options

    with pytest.raises(TypeError, match="option 'options' has type"):
        run_recipe(bad, [])


def test_help_and_option_typos_answer_at_once_without_starting_a_cluster():
    helped = sweepkit("run", "recipes/elastic_net_simulation.py", "--help")
    assert helped.returncode == 0 and "started cluster" not in helped.stderr
    assert "--n-runs N_RUNS" in helped.stdout and "--cluster NAME, --workers N" in helped.stdout
    assert "(default: None)" not in helped.stdout
    typo = sweepkit("run", "recipes/elastic_net_simulation.py", "--n-run", "20")
    assert typo.returncode == 2 and "started cluster" not in typo.stderr
    assert "unrecognized argument '--n-run'; did you mean --n-runs?" in typo.stderr


def test_ctrl_c_keeps_what_finished_and_the_same_command_resumes(tmp_path):
    command = [SWEEPKIT, "run", "recipes/elastic_net_simulation.py", "--n-runs", "3000", "--out", str(tmp_path / "run"),
               "--workers", "2", "--set", "dashboard-address=127.0.0.1:0"]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "results.log").exists() or (tmp_path / "run" / "results.log").stat().st_size < 50_000:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.1)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert "sweepkit: interrupted after" in err and "run the same sweep again to resume" in err
    assert "Traceback" not in err
    again = sweepkit(*command[1:])
    assert again.returncode == 0, again.stderr
    assert "sweepkit: resuming" in again.stderr and "9000 fits (3000 runs x 3 models), 0 failed" in again.stdout
