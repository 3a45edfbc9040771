"""`sweepkit job-script`: the exact script a batch profile submits, with no scheduler running.

The SGE script is compared with a stored copy (tests/expected/sge-job-script.sh).
Whatever depends on the machine or the run is fixed by options (python, PYTHONPATH)
or replaced (the folder the command runs in becomes /home/alice/project). After an
intended change, regenerate the copy with SWEEPKIT_UPDATE_EXPECTED=1 and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweepkit.backends import backend_for
from sweepkit.profiles import resolve

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "tests" / "expected" / "sge-job-script.sh"
PROJECT = "/home/alice/project"  # stands for the folder the command runs in

SETTINGS = [
    "python=/opt/envs/sweep/bin/python",
    "threads=2",
    "memory=6GiB",
    "walltime=04:00:00",  # unquoted: YAML reads 14400 (seconds), sweepkit writes it back as 04:00:00
    "queue=long.q",
    "project=genomics",
    "log-directory=logs",
    "local-directory=$TMPDIR",
    "job-prologue=[module load gcc/12]",
    "job-directives=[-l h=node*]",
    f"env={{PYTHONPATH: {PROJECT}/src, OMP_PROC_BIND: close}}",
]


def job_script(tmp_path: Path, profile: str, *settings: str, env: dict[str, str] | None = None) -> str:
    """`sweepkit job-script PROFILE --set ...` run in ``tmp_path``, with this repository's profiles
    and no Dask settings from the environment."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "SWEEPKIT_"))}
    environ.update(SWEEPKIT_CLUSTERS=str(ROOT / "clusters"), **(env or {}))
    args = [arg for setting in settings for arg in ("--set", setting)]
    proc = subprocess.run(
        [sys.executable, "-m", "sweepkit", "job-script", profile, *args],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_sge_job_script_matches_the_stored_copy(tmp_path):
    script = job_script(tmp_path, "sge", *SETTINGS).replace(str(tmp_path.resolve()), PROJECT)
    if os.environ.get("SWEEPKIT_UPDATE_EXPECTED") == "1":
        EXPECTED.parent.mkdir(exist_ok=True)
        EXPECTED.write_text(script)
    assert script == EXPECTED.read_text()


def test_the_job_script_sets_up_the_drivers_environment_and_no_secret(here, monkeypatch):
    tmp_path = here
    secrets = {"SYNAPSE_AUTH_TOKEN": "syn-fake-7f3a9c2e41", "AWS_SECRET_ACCESS_KEY": "aws-fake-Q2x8Lr0vYt"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    raw = rendered("sge", {"env": {"OMP_PROC_BIND": "close"}})  # as built, before the command line masks anything
    printed = job_script(tmp_path, "sge", "env={OMP_PROC_BIND: close}", env=secrets)
    for script in (raw, printed):
        assert f"cd {tmp_path.resolve()}\n" in script  # workers start where the driver runs
        assert "export OMP_PROC_BIND=close\n" in script  # the profile's env is exported
        assert "export DASK_DISTRIBUTED__NANNY__PRELOAD='[\"sweepkit.worker_setup\"]'\n" in script
        for name, value in secrets.items():
            assert value not in script and name not in script
        assert "***" not in script  # nothing secret needed masking
    pythonpath = next(line for line in printed.splitlines() if line.startswith("export PYTHONPATH="))
    assert str(tmp_path.resolve()) in pythonpath.split("=", 1)[1].split(":")  # `python -m` puts its folder on the path


@pytest.mark.parametrize(
    "profile, directives",
    [
        ("slurm", ["#SBATCH -p short", "#SBATCH -A lab", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=6G",
                   "#SBATCH -t 04:00:00"]),
        ("pbs", ["#PBS -q short", "#PBS -A lab", "#PBS -l select=1:ncpus=2:mem=6144MB", "#PBS -l walltime=04:00:00"]),
        ("lsf", ["#BSUB -q short", '#BSUB -P "lab"', "#BSUB -n 2", "#BSUB -W 04:00"]),
    ],
)
def test_other_schedulers_request_threads_memory_and_walltime(here, profile, directives):
    names = {"slurm": ("partition", "account"), "pbs": ("queue", "account"), "lsf": ("queue", "project")}[profile]
    walltime = "04:00" if profile == "lsf" else 14400  # LSF's format; seconds, as YAML reads 04:00:00
    settings = {names[0]: "short", names[1]: "lab", "threads": 2, "memory": "6GiB", "walltime": walltime}
    script = rendered(profile, settings)
    header = [line for line in script.splitlines() if line.startswith("#") and not line.startswith("#!")]
    for directive in directives:
        assert directive in header, f"{directive!r} not in {header}"
    assert f"cd {here.resolve()}\n" in script
    assert "--nthreads 2 --memory-limit 6.00GiB" in script


def test_no_walltime_leaves_the_queue_default(here):
    """dask-jobqueue would ask for 30 minutes; sweepkit asks for nothing unless told."""
    assert "h_rt" not in rendered("sge", {})
    assert "#SBATCH -t" not in rendered("slurm", {})


def rendered(profile: str, settings: dict) -> str:
    """The job script of the profile with ``settings`` (and no SWEEPKIT_* variables), built in this process."""
    return backend_for(profile).job_script(resolve(profile, settings, environ={}).options)


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """Run in ``tmp_path``, with this repository's profiles."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPKIT_CLUSTERS", str(ROOT / "clusters"))
    return tmp_path
