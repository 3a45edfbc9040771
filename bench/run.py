"""Benchmark: sweepkit against the tools these users would otherwise use, in one run.

    python bench/run.py                 # the full benchmark (about 10 minutes on 2 cores)
    python bench/run.py --quick         # a smoke run (about 1 minute)

Workloads, identical tasks for every engine:
  - elastic-net: the main recipe's fits (recipes/elastic_net_simulation.py, default
    data sizes), one elastic net per bootstrap replicate;
  - no-op: tasks that return their argument, to expose per-task overhead;
  - 1M no-op: one million no-op tasks through sweepkit, with the driver's peak memory.
Engines: a serial loop (the reference, BLAS at one thread), sweepkit on a local
cluster, plain Dask ``client.map`` with the shared data scattered once, joblib
``Parallel`` (loky) and ``multiprocessing.Pool.map`` with a chunksize. Every engine's
results are checked against the serial loop's. Engines alternate over several
rounds and the best round counts: these machines are noisy.

Parallel efficiency = serial time / (workers x wall time). Results go to
bench/results/latest.json and latest.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "recipes"))
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402  (bench/workloads.py: the task functions, importable by every engine)

import sweepkit  # noqa: E402
from sweepkit.report import same  # noqa: E402

SEED = 2024


# -- engines: each gets the sweepkit tasks and the same tasks as plain dicts, and returns values in order --
def run_serial(fn, tasks, plain, shared, workers):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return [fn(**t, **shared) for t in plain]


def run_sweepkit(fn, tasks, plain, shared, workers):
    return sweepkit.sweep(fn, tasks, shared=shared, seed=SEED).to_list()


def run_dask_map(fn, tasks, plain, shared, workers, *, client):
    scattered = {k: client.scatter(v, broadcast=True, hash=False) for k, v in shared.items()}
    futures = client.map(workloads.call, [fn] * len(plain), plain, shared=scattered, pure=False)
    values = client.gather(futures)
    del futures, scattered
    return values


def run_joblib(fn, tasks, plain, shared, workers):
    from joblib import Parallel, delayed

    return Parallel(n_jobs=workers, backend="loky")(delayed(fn)(**t, **shared) for t in plain)


def run_pool(fn, tasks, plain, shared, workers, *, pool):
    chunksize = max(1, len(plain) // (4 * workers))  # Pool.map's own default rule
    return pool.map(workloads.call_with_globals, [(fn, t) for t in plain], chunksize=chunksize)


def time_it(run: Callable[[], list]) -> tuple[float, list]:
    gc.collect()
    start = time.perf_counter()
    values = run()
    return time.perf_counter() - start, values


def bench_workload(name, fn, tasks, shared, workers, rounds, engines) -> dict:
    plain = workloads.bound(tasks, SEED)
    print(f"\n== {name}: {len(tasks)} tasks, {workers} workers, best of {rounds} rounds", flush=True)
    reference = None
    best: dict[str, float] = {}
    for r in range(rounds):
        for engine, run in engines.items():
            seconds, values = time_it(lambda: run(fn, tasks, plain, shared, workers))
            if engine == "serial":
                reference = reference or values
            elif not same(values, reference):
                raise AssertionError(f"{engine} returned different results from the serial loop on {name}")
            best[engine] = min(best.get(engine, float("inf")), seconds)
            print(f"   round {r + 1}  {engine:<10} {seconds:8.2f} s", flush=True)
    serial = best["serial"]
    rows = {}
    for engine, seconds in best.items():
        rows[engine] = {
            "wall_s": round(seconds, 3),
            "efficiency": round(serial / (workers * seconds), 3) if engine != "serial" else 1.0,
            "overhead_us_per_task": round((seconds * (1 if engine == "serial" else workers) - (serial if engine != "serial" else 0)) / len(tasks) * 1e6, 2),
        }
    return {"tasks": len(tasks), "workers": workers, "rounds": rounds, "engines": rows}


def million(n: int, workers: int) -> dict:
    """One million no-op tasks through sweepkit, in a fresh process, with its peak memory."""
    code = f"""
import json, resource, time, sweepkit, psutil, os
def noop(x):
    return x
with sweepkit.sweep_cluster("local", workers={workers}, dashboard_address="127.0.0.1:0") as s:
    s.client.wait_for_workers({workers})
    sweepkit.sweep(noop, sweepkit.grid(x=range(1000)))
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    results = sweepkit.sweep(noop, sweepkit.grid(x=range({n})))
    wall = time.perf_counter() - start
    assert len(results) == {n} and results[{n} - 1] == {n} - 1 and results.ok
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"tasks": {n}, "wall_s": round(wall, 2), "us_per_task": round(wall / {n} * 1e6, 2),
                  "driver_rss_before_mb": round(before / 2**20, 1), "driver_peak_rss_mb": round(peak / 2**20, 1)}}))
"""
    print(f"\n== {n} no-op tasks through sweepkit", flush=True)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"   {row}", flush=True)
    return row


def machine() -> dict:
    import importlib.metadata as md

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: md.version(p) for p in ("sweepkit", "dask", "distributed", "joblib", "numpy", "scikit-learn")},
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
        f"dask {m['packages']['distributed']}, joblib {m['packages']['joblib']}; {report['workers']} workers; best of "
        f"{report['rounds']} alternating rounds.",
        "",
        "| workload | engine | wall (s) | parallel efficiency | overhead per task (µs) |",
        "|---|---|---:|---:|---:|",
    ]
    for workload in ("elastic-net", "no-op"):
        w = report[workload]
        for engine, row in w["engines"].items():
            eff = "reference" if engine == "serial" else f"{row['efficiency']:.2f}"
            over = "" if engine == "serial" else f"{row['overhead_us_per_task']:.0f}"
            lines.append(f"| {workload} ({w['tasks']:,} tasks) | {engine} | {row['wall_s']:.2f} | {eff} | {over} |")
    mil = report["million"]
    lines += [
        "",
        f"1,000,000 no-op tasks through sweepkit: {mil['wall_s']:.1f} s ({mil['us_per_task']:.1f} µs per task), "
        f"driver peak memory {mil['driver_peak_rss_mb']:.0f} MB (it held {mil['driver_rss_before_mb']:.0f} MB before the sweep).",
        "",
        "Efficiency = serial time / (workers × wall time); overhead per task = (workers × wall − serial) / tasks.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke test")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fits", type=int, default=10_000)
    parser.add_argument("--noops", type=int, default=20_000)
    parser.add_argument("--million", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.fits, args.noops, args.million = 1, 1000, 2000, 20_000
    from distributed import Client, LocalCluster

    workers = args.workers
    report = {"machine": machine(), "workers": workers, "rounds": args.rounds}
    data = workloads.elastic_net_data(SEED)
    with sweepkit.sweep_cluster("local", workers=workers, dashboard_address="127.0.0.1:0") as session, \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        session.client.wait_for_workers(workers)
        client.wait_for_workers(workers)
        for name, fn, tasks, shared in [
            ("elastic-net", workloads.fit_one, workloads.elastic_net_tasks(args.fits), data),
            ("no-op", workloads.noop, sweepkit.grid(x=range(args.noops)), {}),
        ]:
            spawn = multiprocessing.get_context("spawn")
            with spawn.Pool(workers, initializer=workloads.set_shared, initargs=(shared,)) as pool:
                engines = {
                    "serial": run_serial,
                    "sweepkit": run_sweepkit,
                    "dask map": lambda *a: run_dask_map(*a, client=client),
                    "joblib": run_joblib,
                    "mp.Pool": lambda *a: run_pool(*a, pool=pool),
                }
                warm = tasks[: 4 * workers]
                for run in engines.values():  # start pools, import libraries, fill caches
                    run(fn, warm, workloads.bound(warm, SEED), shared, workers)
                report[name] = bench_workload(name, fn, tasks, shared, workers, args.rounds, engines)
    report["million"] = million(args.million, workers)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if args.quick else "latest"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    print("\n" + markdown(report))


if __name__ == "__main__":
    main()
