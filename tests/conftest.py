"""Shared fixtures. Every test leaves no process behind (checked at the end)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from sweepkit.cluster import start
from sweepkit.profiles import resolve

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def _local2():
    session = start(resolve("local", {"workers": 2, "dashboard-address": "127.0.0.1:0"}))
    try:
        session.client.wait_for_workers(2, timeout=60)
        yield session
    finally:
        session.close()


@pytest.fixture
def local2(_local2):
    """A local cluster of two workers (started once per module), active in the test."""
    with _local2:
        yield _local2


@pytest.fixture(autouse=True, scope="session")
def no_leftover_processes():
    yield
    deadline = time.monotonic() + 10
    while (left := [p for p in psutil.Process().children(recursive=True) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]):
        if time.monotonic() > deadline:
            pytest.fail(f"processes left behind by the tests: {[(p.pid, ' '.join(p.cmdline())[:80]) for p in left]}")
        time.sleep(0.2)


def run_script(tmp_path: Path, source: str, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``source`` as a Python script in a fresh interpreter, in ``tmp_path``."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def comparable(frame):
    """A results table without the columns that legitimately differ between runs."""
    return frame.drop(columns=["duration", "worker"])
