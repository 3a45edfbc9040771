"""Durable runs: every finished task on disk at once, resume, refusals, verify, no secrets."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import comparable

import sweepkit
from sweepkit import grid, sweep
from sweepkit.cli import main as cli
from sweepkit.report import verify
from sweepkit.store import LOG, frame, read_frames, stored_batches

RUN = """
import os, sys, time
import numpy as np
import sweepkit

def task(i, rng, X):
    with open(os.environ["CALLS"], "a") as f:
        f.write(f"{i}\\n")
    time.sleep(0.0005)
    return {"x": float(X[i % len(X)] * rng.standard_normal()), "i": i}

if __name__ == "__main__":
    X = np.linspace(0, 1, 97)
    with sweepkit.sweep_cluster("local", workers=2, dashboard_address="127.0.0.1:0"):
        sweepkit.sweep(task, sweepkit.grid(i=range(10_000)), shared={"X": X}, seed=3, store=sys.argv[1], batch_size=50)
"""


def computed(calls: Path) -> list[int]:
    return [int(line) for line in calls.read_text().split()] if calls.exists() else []


def test_a_killed_driver_resumes_without_recomputing_finished_tasks(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN))
    store, calls = tmp_path / "store", tmp_path / "calls-1.txt"
    driver = subprocess.Popen([sys.executable, str(script), str(store)], cwd=tmp_path, env={**os.environ, "CALLS": str(calls)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the store is readable while the run writes it
        if (store / LOG).exists() and sweepkit.load(store).counts()["ok"] >= 5000:
            break
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    stored = sweepkit.load(store)
    finished = set(stored.done().tolist())
    assert 5000 <= len(finished) < 10_000, "killed about half way"
    assert json.loads((store / "manifest.json").read_text())["status"] == "running"

    calls2 = tmp_path / "calls-2.txt"
    done = subprocess.run(
        [sys.executable, str(script), str(store)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CALLS": str(calls2)},
    )
    assert done.returncode == 0, done.stderr
    again = computed(calls2)
    assert not finished & set(again), "a task that had finished was computed again"
    assert set(again) | finished == set(range(10_000))
    assert len(again) == len(set(again)) and len(again) <= 10_000 - len(finished) + 200  # at most the batches in flight at the kill

    resumed = sweepkit.load(store)
    assert resumed.counts() == {"ok": 10_000, "error": 0, "pending": 0}
    sys.path.insert(0, str(tmp_path))
    os.environ["CALLS"] = str(tmp_path / "calls-3.txt")
    try:
        import run as module

        uninterrupted = sweep(module.task, grid(i=range(10_000)), shared={"X": np.linspace(0, 1, 97)}, seed=3)
    finally:
        sys.path.remove(str(tmp_path))
        del os.environ["CALLS"]
    pd.testing.assert_frame_equal(comparable(resumed.to_frame()), comparable(uninterrupted.to_frame()), check_exact=True)
    info = json.loads((store / "manifest.json").read_text())
    assert info["status"] == "complete" and info["counts"]["ok"] == 10_000 and len(info["sessions"]) == 2


def square(i, offset, rng):
    return i * i + offset + rng.random()


def test_load_returns_what_the_sweep_returned(tmp_path):
    results = sweep(square, grid(i=range(30)), shared={"offset": 1}, seed=5, store=tmp_path / "s")
    loaded = sweepkit.load(tmp_path / "s")
    assert loaded.seed == results.seed == 5 and loaded.to_list() == results.to_list()
    pd.testing.assert_frame_equal(loaded.to_frame(), results.to_frame(), check_exact=True)


def test_running_a_finished_sweep_again_computes_nothing(tmp_path):
    calls = []

    def counted(i, rng):
        calls.append(i)
        return rng.random()

    first = sweep(counted, grid(i=range(20)), seed=1, store=tmp_path / "s")
    second = sweep(counted, grid(i=range(20)), store=tmp_path / "s")  # seed=None: the stored one
    assert len(calls) == 20 and second.to_list() == first.to_list() and second.seed == 1


def test_failed_tasks_are_retried_on_resume(tmp_path):
    flaky = {"fail": True}

    def sometimes(i):
        if i == 3 and flaky["fail"]:
            raise OSError("transient")
        return i

    first = sweep(sometimes, grid(i=range(6)), store=tmp_path / "s", on_error="collect")
    assert first.counts()["error"] == 1
    flaky["fail"] = False
    second = sweep(sometimes, grid(i=range(6)), store=tmp_path / "s", on_error="collect")
    assert second.ok and second.to_list() == list(range(6))
    assert sweepkit.load(tmp_path / "s").ok


def edited(i, offset, rng):
    return i * i + offset + rng.random() + 1


@pytest.mark.parametrize(
    "change, named",
    [
        ({"fn": edited}, "the function (test_store.square -> test_store.edited)"),
        ({"seed": 6}, "the seed (5 stored, 6 now)"),
        ({"shared": {"offset": 2}}, "shared object 'offset' (its contents differ)"),
        ({"tasks": grid(i=range(31))}, "the tasks (30 stored, 31 now"),
    ],
)
def test_a_changed_sweep_is_refused_naming_the_change(tmp_path, change, named):
    sweep(square, grid(i=range(30)), shared={"offset": 1}, seed=5, store=tmp_path / "s")
    args = {"fn": square, "tasks": grid(i=range(30)), "shared": {"offset": 1}, "seed": 5, **change}
    with pytest.raises(sweepkit.StoreMismatch) as err:
        sweep(args["fn"], args["tasks"], shared=args["shared"], seed=args["seed"], store=tmp_path / "s")
    assert named in str(err.value) and "another store folder" in str(err.value)


def test_a_refusal_comes_before_any_cluster_starts(tmp_path, monkeypatch):
    from sweepkit import cluster

    sweep(square, grid(i=range(30)), shared={"offset": 1}, seed=5, store=tmp_path / "s")
    before = sorted(p.name for p in (tmp_path / "s").iterdir())
    monkeypatch.setenv("SWEEPKIT_CLUSTER", "local")  # would start a cluster on the first sweep
    try:
        with pytest.raises(sweepkit.StoreMismatch, match="the seed"):
            sweep(square, grid(i=range(30)), shared={"offset": 1}, seed=6, store=tmp_path / "s")
        assert not cluster._implicit, "a cluster was started for a sweep the store refuses"
    finally:
        cluster.close_implicit()
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == before
    assert sweepkit.load(tmp_path / "s").ok


def test_an_edited_function_body_is_refused(tmp_path):
    source = "def fit(i):\n    return i + {}\n"
    for k in (1, 2):
        namespace: dict = {}
        path = tmp_path / f"mod{k}.py"
        path.write_text(source.format(k))
        exec(compile(path.read_text(), str(tmp_path / "mod.py"), "exec"), namespace)
        fn = namespace["fit"]
        fn.__module__ = "mod"
        if k == 1:
            sweep(fn, grid(i=range(3)), store=tmp_path / "s")
        else:
            with pytest.raises(sweepkit.StoreMismatch, match="the function's code \\(mod.fit was edited\\)"):
                sweep(fn, grid(i=range(3)), store=tmp_path / "s")


def test_a_crash_at_any_byte_leaves_only_whole_records(tmp_path):
    sweep(square, grid(i=range(40)), shared={"offset": 0}, seed=2, store=tmp_path / "s", batch_size=7)
    log = (tmp_path / "s" / LOG).read_bytes()
    frames, end, problem = read_frames(tmp_path / "s" / LOG)
    assert end == len(log) and problem is None and len(frames) == 6
    whole = sweepkit.load(tmp_path / "s").to_list()
    cut_store = tmp_path / "cut"
    for cut in range(len(log) - 300, len(log)):  # every byte of the last records
        (tmp_path / "s" / LOG).write_bytes(log[:cut])
        partial = sweepkit.load(tmp_path / "s")
        for i in partial.done():
            assert partial[int(i)] == whole[int(i)]
    (tmp_path / "s" / LOG).write_bytes(log[: len(log) - 5])  # torn tail, then resume
    resumed = sweep(square, grid(i=range(40)), shared={"offset": 0}, seed=2, store=tmp_path / "s")
    assert resumed.to_list() == whole
    assert read_frames(tmp_path / "s" / LOG)[2] is None
    assert not cut_store.exists()


def test_a_damaged_record_is_reported_not_ignored(tmp_path):
    sweep(square, grid(i=range(10)), shared={"offset": 0}, seed=2, store=tmp_path / "s", batch_size=3)
    log = tmp_path / "s" / LOG
    data = bytearray(log.read_bytes())
    data[20] ^= 0xFF
    log.write_bytes(bytes(data))
    with pytest.raises(sweepkit.StoreError, match="fails its checksum"):
        sweepkit.load(tmp_path / "s")


def test_a_second_driver_on_the_same_store_is_refused(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent("""
        import sys, time, sweepkit
        def nap(i):
            time.sleep(0.02)
            return i
        sweepkit.sweep(nap, sweepkit.grid(i=range(200)), store=sys.argv[1])
    """))
    first = subprocess.Popen([sys.executable, str(script), str(tmp_path / "s")], cwd=tmp_path)
    while not (tmp_path / "s" / LOG).exists():
        time.sleep(0.05)
    time.sleep(0.3)
    with pytest.raises(sweepkit.StoreLocked, match="is in use by another sweep"):
        sweep(lambda i: i, grid(i=range(200)), store=tmp_path / "s")
    assert first.wait(timeout=60) == 0
    assert sweepkit.load(tmp_path / "s").to_list() == list(range(200))


def test_verify_matches_an_honest_run_and_catches_an_altered_result(tmp_path, capsys):
    sweep(square, grid(i=range(50)), shared={"offset": 0.5}, seed=9, store=tmp_path / "s")
    assert {r["result"] for r in verify(tmp_path / "s", sample=10)} == {"match"}
    with pytest.raises(SystemExit) as code:
        cli(["verify", str(tmp_path / "s"), "--sample", "50"])
    assert code.value.code == 0 and "50 of 50 recomputed tasks match" in capsys.readouterr().out

    log = tmp_path / "s" / LOG
    forged = b""
    for meta, values in stored_batches(log):  # one result changed, well framed
        values = [v + 1e-9 if i == 17 else v for i, v in zip(meta["indices"], values)]
        forged += frame(pickle.dumps((meta, pickle.dumps(values))))
    log.write_bytes(forged)
    report = {r["task"]: r for r in verify(tmp_path / "s", sample=50)}
    assert report[17]["result"] == "mismatch" and "stored" in report[17]["detail"]
    assert report["-"]["detail"] == "results.log no longer matches the digest in manifest.json"
    assert all(r["result"] == "match" for t, r in report.items() if t not in (17, "-"))
    with pytest.raises(SystemExit) as code:
        cli(["verify", str(tmp_path / "s"), "--sample", "50"])
    assert code.value.code == 1


def test_the_store_records_provenance_and_no_secret(tmp_path, monkeypatch, local2):
    token, key = "syn-FAKE-token-5f2a9c1e77", "aws/FAKE+secret+9QzX81LmNp"
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", token)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key)
    X = np.arange(12.0).reshape(4, 3)
    sweep(lambda i, X, rng: float(X[i].sum() + rng.random()), grid(i=range(4)), shared={"X": X}, seed=1, store=tmp_path / "s")
    info = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert info["tasks"]["count"] == 4 and info["seed"] == 1 and info["status"] == "complete"
    assert info["shared"]["X"] == {"type": "numpy.ndarray", "shape": [4, 3], "dtype": "float64", "sha256": info["shared"]["X"]["sha256"]}
    assert info["function"]["name"].endswith("<lambda>") and "source_sha256" in info["function"]
    assert info["code"]["commit"] and isinstance(info["code"]["dirty"], bool)  # this test file is in the project's git repository
    session = info["sessions"][-1]
    assert session["cluster"]["profile"] == "local" and session["cluster"]["options"]["workers"] == [2, 2]
    packages = session["environment"]["packages"]
    assert {"sweepkit", "dask", "distributed", "numpy", "pandas"} <= packages.keys()
    assert info["counts"] == {"ok": 4, "error": 0, "pending": 0} and len(info["results_sha256"]) == 64
    for path in (tmp_path / "s").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert token.encode() not in data and key.encode() not in data, f"secret in {path}"


def test_status_and_results_commands(tmp_path, capsys):
    sweep(lambda i: {"sq": i * i} if i != 2 else 1 / 0, grid(i=range(5)), store=tmp_path / "s", on_error="collect")
    with pytest.raises(SystemExit):
        cli(["status", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert "done 5 of 5: 4 ok, 1 failed, 0 pending" in out and "failed task 2: ZeroDivisionError" in out
    with pytest.raises(SystemExit):
        cli(["results", str(tmp_path / "s")])
    csv = capsys.readouterr().out
    assert csv.splitlines()[0].startswith("task,i,sq,seed,status,error,duration,worker") and len(csv.splitlines()) == 6
    with pytest.raises(SystemExit) as refused:
        cli(["results", str(tmp_path / "s"), "--format", "parquet"])
    assert "give it with --output FILE.parquet" in str(refused.value.code)
    with pytest.raises(SystemExit):
        cli(["results", str(tmp_path / "s"), "--format", "parquet", "--output", str(tmp_path / "t.parquet")])
    table = pd.read_parquet(tmp_path / "t.parquet")
    assert table["sq"].tolist()[:2] == [0, 1] and table["status"].tolist()[2] == "error"


def test_csv_holds_arrays_as_one_line_lists(tmp_path, capsys):
    sweep(lambda i: {"selected": np.arange(i + 30)}, grid(i=range(3)), store=tmp_path / "s")
    with pytest.raises(SystemExit):
        cli(["results", str(tmp_path / "s")])
    frame = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert len(frame) == 3 and json.loads(frame.loc[2, "selected"]) == list(range(32))


def test_a_store_of_another_format_is_refused(tmp_path):
    sweep(lambda i: i, grid(i=range(3)), store=tmp_path / "s")
    info = json.loads((tmp_path / "s" / "manifest.json").read_text())
    (tmp_path / "s" / "manifest.json").write_text(json.dumps({**info, "format": 99}))
    with pytest.raises(sweepkit.StoreError, match="written in store format 99, and this sweepkit reads format 1"):
        sweepkit.load(tmp_path / "s")
