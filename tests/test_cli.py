"""The command line, as a new user meets it: run the main job, list profiles, get errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line and not line.startswith((" ", "Search"))}
    assert {"local", "serial"} <= lines.keys()
    assert "clusters/local.yaml" in lines["local"]
    shown = sweepkit("clusters", "--show", "local", SWEEPKIT_WORKERS="3")
    assert "workers: (3, 3)    # environment" in shown.stdout and "threads: 1    # profile file" in shown.stdout


def test_errors_are_one_clear_line(tmp_path):
    unknown = sweepkit("run", "recipes/elastic_net_simulation.py", "--cluster", "sgee", "--n-runs", "3", "--out", str(tmp_path))
    assert unknown.returncode == 1
    assert "unknown cluster profile 'sgee'" in unknown.stderr and "Traceback" not in unknown.stderr
    missing = sweepkit("status", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "is not a sweepkit store" in missing.stderr
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
