"""sweep(): the same results serially and on a local cluster, shared data sent once,
errors collected or raised, bad input refused before anything runs."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
from conftest import comparable

import helpers
import sweepkit
from sweepkit import bootstrap, grid, sweep, sweep_cluster

X = np.random.default_rng(0).standard_normal((40, 6))
TASKS = grid(a=[0.5, 1.0, 2.0], b=list(range(40)))  # 120 tasks


def noisy_frame(**kw) -> pd.DataFrame:
    return comparable(sweep(helpers.noisy, TASKS, shared={"X": X}, seed=7, **kw).to_frame())


def test_identical_serially_and_on_local_clusters_for_any_batch_size(local2):
    with sweep_cluster("serial"):
        serial = noisy_frame()
    assert (serial["seed"].notna()).all() and serial["status"].eq("ok").all()
    for batch_size in (None, 1, 7):
        pd.testing.assert_frame_equal(noisy_frame(batch_size=batch_size), serial, check_exact=True)
    with sweep_cluster("local", workers=1, **{"dashboard-address": "127.0.0.1:0"}):
        for batch_size in (None, 13):
            pd.testing.assert_frame_equal(noisy_frame(batch_size=batch_size), serial, check_exact=True)


def test_outside_any_cluster_runs_in_this_process():
    results = sweep(helpers.noisy, TASKS[:3], shared={"X": X}, seed=7)
    assert set(results.to_frame()["worker"]) == {"local process"}


def test_task_seed_reproduces_a_tasks_stream():
    results = sweep(lambda i, rng: rng.random(), grid(i=range(5)), seed=11)
    frame = results.to_frame()
    for row in frame.itertuples():
        assert np.random.default_rng(row.seed).random() == row.value == results[row.task]
        assert row.seed == sweepkit.task_seed(11, row.task)


def test_fresh_seed_is_recorded_and_repeats_the_run():
    first = sweep(lambda i, rng: rng.integers(1 << 60), grid(i=range(20)))
    again = sweep(lambda i, rng: rng.integers(1 << 60), grid(i=range(20)), seed=first.seed)
    assert first.to_list() == again.to_list()
    assert first.seed != sweep(lambda i, rng: 0, grid(i=range(2))).seed


def test_shared_data_crosses_to_each_worker_once(local2):
    """A 200 MB array used by 1,000 tasks is deserialized once per worker, never per task,
    over a sweep long enough (5 s) for Dask's memory manager to have dropped replicas."""
    payload = helpers.Payload(np.ones(25_000_000))  # 200 MB
    before = local2.client.run(helpers.loads)
    results = sweep(helpers.use_payload, grid(i=range(1000)), shared={"payload": payload, "pause": 0.01}, batch_size=10)
    assert results.ok and results.to_list() == [1.0] * 1000
    after = local2.client.run(helpers.loads)
    assert {w: after[w] - before.get(w, 0) for w in after} == {w: 1 for w in after}
    assert len(set(results.to_frame()["worker"])) == 2  # both workers did work


def test_a_worker_that_joins_later_gets_the_shared_data(local2, tmp_path):
    payload = helpers.Payload(np.arange(1000.0))
    flag = tmp_path / "third-worker-joined"

    def grow() -> None:
        local2.cluster.scale(3)
        local2.client.wait_for_workers(3, timeout=60)
        flag.touch()

    grower = threading.Thread(target=grow)
    grower.start()
    try:
        results = sweep(helpers.use_payload_until, grid(i=range(800)), shared={"payload": payload, "flag": str(flag)}, batch_size=4)
    finally:
        grower.join()
        local2.cluster.scale(2)
        local2.client.wait_for_workers(2)
    assert flag.exists() and results.to_list() == [float(i % 1000) for i in range(800)]
    assert "2" in set(results.to_frame()["worker"]), "the new worker ran tasks, so it had the shared data"


def test_shared_data_lost_with_its_only_worker_is_sent_again():
    with sweep_cluster("local", workers=1, dashboard_address="127.0.0.1:0") as session:
        session.client.wait_for_workers(1)
        (pid,) = session.client.run(os.getpid).values()
        threading.Timer(1.0, os.kill, args=(pid, signal.SIGKILL)).start()  # the nanny starts a new, empty worker
        results = sweep(helpers.use_payload, grid(i=range(400)), shared={"payload": helpers.Payload(np.arange(50.0)), "pause": 0.01}, batch_size=5)
    assert results.ok and results.to_list() == [float(i % 50) for i in range(400)]


def test_the_same_object_in_two_concurrent_sweeps(local2):
    """Dask gives equal objects one key by default; one sweep's release must not drop the other's data."""
    shared = {"payload": helpers.Payload(np.arange(10.0)), "pause": 0.005}
    out: dict[str, list] = {}

    def run(name: str, n: int) -> None:
        out[name] = sweep(helpers.use_payload, grid(i=range(n)), shared=shared, batch_size=2).to_list()

    threads = [threading.Thread(target=run, args=(name, n)) for name, n in (("short", 20), ("long", 200))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out["short"] == [float(i % 10) for i in range(20)]
    assert out["long"] == [float(i % 10) for i in range(200)]


def test_shared_lists_and_dicts_stay_whole(local2):
    def use(i, weights, config):
        return weights[i] * config["scale"]

    shared = {"weights": [1.0, 2.0, 3.0], "config": {"scale": 10}}
    assert sweep(use, grid(i=range(3)), shared=shared).to_list() == [10.0, 20.0, 30.0]
    assert not any(key in ("scale",) for key in local2.cluster.scheduler.tasks)


def test_collect_finishes_every_other_task(local2):
    results = sweep(helpers.fail_at, grid(i=range(1000)), on_error="collect")
    assert results.counts() == {"ok": 999, "error": 1, "pending": 0}
    (failure,) = results.errors
    assert failure.index == 500 and failure.params == {"i": 500}
    assert "ValueError: task 500 is bad" in failure.traceback and "helpers.py" in failure.traceback
    frame = results.to_frame()
    assert frame.loc[500, "status"] == "error" and frame.loc[500, "error"] == "ValueError: task 500 is bad"
    assert frame.loc[frame.task != 500, "value"].tolist() == [2 * i for i in range(1000) if i != 500]


@pytest.mark.parametrize("where", ["serial", "local"])
def test_raise_names_the_task_and_keeps_what_finished(where, local2):
    if where == "serial":
        with sweep_cluster("serial"), pytest.raises(sweepkit.TaskError) as err:
            sweep(helpers.fail_at, grid(i=range(1000)))
    else:
        with pytest.raises(sweepkit.TaskError) as err:
            sweep(helpers.fail_at, grid(i=range(1000)))
    e = err.value
    assert e.index == 500 and e.params == {"i": 500}
    assert "task 500" in str(e) and "{'i': 500}" in str(e)
    assert isinstance(e.__cause__, ValueError)
    if where == "serial":  # the original traceback itself
        assert e.__cause__.__traceback__ is not None
    else:  # the worker's traceback travels as text
        assert "helpers.py" in str(e.__cause__.__cause__)
    done = e.results.done()
    assert e.results.counts()["ok"] >= (500 if where == "serial" else 1)
    assert all(e.results[int(i)] == 2 * i for i in done if i != 500)


def test_bootstrap_replicates_are_shared_by_every_model():
    def draw(model, replicate):
        return replicate.indices(10).tolist()

    results = sweep(draw, grid(model=["a", "b"]) * bootstrap(3), seed=5).to_frame()
    by_model = {m: list(g["value"]) for m, g in results.groupby("model")}
    assert by_model["a"] == by_model["b"]
    assert by_model["a"][0] != by_model["a"][1]


def test_frames_from_dict_scalar_and_frame_values():
    scalar = sweep(lambda i: i * 1.5, grid(i=range(3))).to_frame()
    assert list(scalar.columns[:3]) == ["task", "i", "value"] and scalar["value"].tolist() == [0, 1.5, 3]
    clash = sweep(lambda i: {"i": i, "sq": i * i}, grid(i=range(3))).to_frame()
    assert clash["i_value"].tolist() == [0, 1, 2] and clash["sq"].tolist() == [0, 1, 4]
    stacked = sweep(lambda i: pd.DataFrame({"fold": [0, 1], "score": [i, -i]}), grid(i=range(3))).to_frame()
    assert len(stacked) == 6 and stacked["score"].tolist() == [0, 0, 1, -1, 2, -2]
    assert stacked["i"].tolist() == [0, 0, 1, 1, 2, 2]


def test_a_sweep_inside_a_task_runs_serially_on_that_worker(local2):
    def outer(i, replicate):
        before = replicate.indices(5).tolist()
        inner = sweep(lambda j: j * i, grid(j=range(3)), progress=False, seed=99)
        again = sweep(lambda j: j, grid(j=range(2)), progress=False)  # still inside the task
        assert replicate.indices(5).tolist() == before  # the outer sweep's seed, after the inner sweeps
        return int(sum(inner.to_frame()["worker"] == "local process") + sum(again.to_frame()["worker"] == "local process"))

    assert sweep(outer, grid(i=range(4)) * bootstrap(1), seed=1).to_list() == [5, 5, 5, 5]


def test_progress_bar_on_request(capsys):
    sweep(lambda i: i, grid(i=range(50)), progress=True)
    assert "50/50" in capsys.readouterr().err


# -- bad input is refused before anything runs -------------------------------------------


CALLS: list[float] = []


def f(alpha, X, rng):
    CALLS.append(alpha)
    return alpha


@pytest.mark.parametrize(
    "tasks, shared, message",
    [
        ([{"alpha": 1, "alhpa": 2}], {"X": 1}, "task 0 (parameters alhpa, alpha) has parameter 'alhpa', which f() does not accept; did you mean 'alpha'?"),
        ([{"alpha": 1, "X": 2}], {"X": 1}, "['X'] is both a task parameter and a shared object"),
        ([{"alpha": 1}], {}, "f() requires ['X'], but task 0"),
        ([{"alpha": 1, "rng": 3}], {"X": 1}, "has a parameter 'rng'"),
        ([{"alpha": 1}], {"X": 1, "Y": 2}, "shared object(s) ['Y'] are not parameters of f()"),
        ([{"alpha": 1}], {"X": 1, "rng": 2}, "'rng': that name is reserved"),
        ([1, 2], {"X": 1}, "task 0 is int 1, not a dict of parameters"),
    ],
)
def test_parameter_errors_name_the_problem(tasks, shared, message):
    CALLS.clear()
    with pytest.raises((TypeError, ValueError)) as err:
        sweep(f, tasks, shared=shared)
    assert message in str(err.value)
    assert not CALLS


@pytest.mark.parametrize(
    "kw, message",
    [({"on_error": "ignore"}, "on_error must be one of"), ({"batch_size": 0}, "batch_size must be a positive"), ({"seed": -1}, "seed must be a non-negative")],
)
def test_option_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        sweep(lambda i: i, grid(i=range(2)), **kw)


def test_an_unpicklable_function_is_refused_before_submission(local2):
    lock = threading.Lock()

    def uses_lock(i):
        with lock:
            return i

    with pytest.raises(TypeError, match="cannot be pickled, so it cannot be sent to the workers"):
        sweep(uses_lock, grid(i=range(10)))
    assert not any(key.startswith("sweepkit-batch") for key in local2.cluster.scheduler.tasks)


def identity(x):
    return x


def test_a_million_tasks_on_two_workers(local2):
    """The driver holds only the batches in flight: its memory grows with the results
    (a million small ints here), not with a graph of a million futures."""
    import psutil

    before = psutil.Process().memory_info().rss
    results = sweep(identity, grid(x=range(1_000_000)))
    grown = psutil.Process().memory_info().rss - before
    assert len(results) == 1_000_000 and results.ok and results[999_999] == 999_999
    assert results.to_list()[::100_000] == list(range(0, 1_000_000, 100_000))
    assert grown < 400 * 2**20, f"driver memory grew by {grown / 2**20:.0f} MB"
    deadline = time.monotonic() + 5  # the client releases its last futures asynchronously
    while [k for k in local2.cluster.scheduler.tasks if str(k).startswith("sweepkit-batch")]:
        assert time.monotonic() < deadline, "batches released"
        time.sleep(0.05)


def test_a_result_that_cannot_travel_fails_only_its_task(local2):
    def maybe_lock(i):
        return threading.Lock() if i == 3 else i

    results = sweep(maybe_lock, grid(i=range(6)), on_error="collect")
    assert [results[i] for i in (0, 1, 2, 4, 5)] == [0, 1, 2, 4, 5]
    (failure,) = results.errors
    assert failure.index == 3 and "its result (lock) cannot be pickled" in failure.error


def test_batch_sizes_hide_round_trips_and_ignore_first_call_costs():
    from sweepkit.engine import Batch, BatchResult, BatchSizer, run_batch

    sizer = BatchSizer(per_task=0.001)  # 1 ms tasks, 1 s target
    assert sizer.next(10_000, slots=2) == 1000  # 1 s of work, from the time an earlier sweep measured
    assert sizer.next(1000, slots=2) == 250  # guided: a quarter of what is left per batch...
    assert sizer.next(100, slots=2) == 50  # ...but never below 50 ms of work
    assert sizer.next(10, slots=2) == 10
    assert BatchSizer(per_task=10.0).next(3, slots=2) == 1  # long tasks: one at a time at the end

    cold = BatchResult([None] * 3, [5.0, 0.001, 0.003], bytes(3), None, None, False, cold=True)
    assert cold.timing() == (2, 0.004)  # imports and caches of the first call do not count

    def first_call_is_cold(x):
        return x

    runs = [run_batch(first_call_is_cold, grid(x=range(3)), Batch(range(3)), {}, 0, False, False, in_process=True) for _ in range(2)]
    assert [r.cold for r in runs] == [True, False] and runs[1].timing()[0] == 3
