"""Benchmark: sweepkit against the tools these users would otherwise use, in one run.

    python bench/run.py                 # the full benchmark (about 20 minutes on 2 cores)
    python bench/run.py --quick         # a smoke run (about a minute)

Workloads, identical tasks for every engine:
  - elastic-net: the main recipe's fits (recipes/elastic_net_simulation.py, default
    data sizes), one elastic net per bootstrap replicate;
  - no-op: tasks that return their argument, to expose per-task overhead;
  - 1M no-op: one million no-op tasks through sweepkit, with the driver's peak memory.
Engines: a serial loop (the reference, BLAS at one thread), sweepkit on a local
cluster, plain Dask ``client.map`` with the shared data scattered once, joblib
``Parallel`` (loky) and ``multiprocessing.Pool.map`` with a chunksize.

Each measurement runs in a fresh process: the engine starts (cluster, pool), warms
up on a few tasks, then the timed run; so no engine's leftovers (a scheduler still
releasing futures, idle pools) run beside the next one. Engines alternate over
several rounds and medians count: these machines are noisy, the host's speed drifts by
a third within minutes, so engines are also compared within each round. Every engine's
results are checked against the serial loop's.

Parallel efficiency = serial time / (workers x wall time). Results go to
bench/results/latest.json and latest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "recipes"), str(HERE)]

import workloads  # noqa: E402  (bench/workloads.py: the task functions, importable by every engine)

ENGINES = ("serial", "sweepkit", "dask map", "joblib", "mp.Pool")
SEED = 2024


# -- one measurement, in its own process ------------------------------------------------
def measure(engine: str, workload: str, n: int, workers: int, out: Path) -> None:
    """Start ``engine``, warm it up, time one run of ``workload``; write (seconds, values) to ``out``."""
    fn, tasks, shared = workloads.workload(workload, n, SEED)
    plain = workloads.bound(tasks, SEED)
    warm = slice(0, 4 * workers)
    with workloads.engine(engine, workers, shared) as run:
        run(fn, tasks[warm], plain[warm])
        start = time.perf_counter()
        values = run(fn, tasks, plain)
        seconds = time.perf_counter() - start
    with open(out, "wb") as f:
        pickle.dump((seconds, values), f)


def timed(engine: str, workload: str, n: int, workers: int) -> tuple[float, list]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "measurement.pkl"
        subprocess.run(
            [sys.executable, __file__, "--measure", engine, workload, str(n), str(workers), str(out)],
            check=True, stdout=subprocess.DEVNULL,
        )
        with open(out, "rb") as f:
            return pickle.load(f)


def bench_workload(workload: str, n: int, workers: int, rounds: int) -> dict:
    from sweepkit.report import same

    print(f"\n== {workload}: {n} tasks, {workers} workers, {rounds} rounds", flush=True)
    reference, times = None, {}
    for r in range(rounds):
        for engine in ENGINES:
            seconds, values = timed(engine, workload, n, workers)
            if engine == "serial":
                reference = reference or values
            elif not same(values, reference):
                raise AssertionError(f"{engine} returned different results from the serial loop on {workload}")
            times.setdefault(engine, []).append(seconds)
            print(f"   round {r + 1}  {engine:<10} {seconds:8.2f} s", flush=True)
    serial, serial_median = min(times["serial"]), statistics.median(times["serial"])
    parallel = [e for e in times if e != "serial"]

    def vs_fastest_other(engine: str) -> float:
        """Median over rounds of (the fastest other parallel engine's time / this engine's
        time) in the same round: above 1, this engine was the fastest."""
        return statistics.median(min(times[o][r] for o in parallel if o != engine) / times[engine][r] for r in range(rounds))

    return {
        "tasks": n, "workers": workers, "rounds": rounds,
        "engines": {
            engine: {
                "wall_s": round(min(t), 3),
                "median_wall_s": round(statistics.median(t), 3),
                "all_wall_s": [round(x, 3) for x in t],
                "efficiency": round(serial / (workers * min(t)), 3),
                "median_efficiency": round(serial_median / (workers * statistics.median(t)), 3),
                "overhead_us_per_task": round((workers * statistics.median(t) - serial_median) / n * 1e6, 2),
                **({"vs_fastest_other": round(vs_fastest_other(engine), 3)} if engine != "serial" else {}),
            }
            for engine, t in times.items()
        },
    }


def million(n: int, workers: int) -> dict:
    """``n`` no-op tasks through sweepkit, in a fresh process, with its peak memory."""
    code = f"""
import json, resource, time, psutil, sweepkit
def noop(x):
    return x
with sweepkit.sweep_cluster("local", workers={workers}, dashboard_address="127.0.0.1:0"):
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

    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")] if cpuinfo.exists() else []
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": models[0] if models else platform.processor(),
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
        f"dask/distributed {m['packages']['distributed']}, joblib {m['packages']['joblib']}, scikit-learn "
        f"{m['packages']['scikit-learn']}; {report['workers']} workers; {report['rounds']} alternating rounds, "
        "each engine in a fresh process; median round (best round in brackets).",
        "",
        "| workload | engine | wall (s) | parallel efficiency | overhead per task (µs) | fastest other ÷ this, same round |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for workload in ("elastic-net", "no-op"):
        w = report[workload]
        for engine, row in w["engines"].items():
            wall = f"{row['median_wall_s']:.2f} ({row['wall_s']:.2f})"
            if engine == "serial":
                lines.append(f"| {workload} ({w['tasks']:,} tasks) | serial | {wall} | reference | | |")
                continue
            eff = f"{row['median_efficiency']:.2f} ({row['efficiency']:.2f})"
            lines.append(f"| {workload} ({w['tasks']:,} tasks) | {engine} | {wall} | {eff} | {row['overhead_us_per_task']:.0f} | {row['vs_fastest_other']:.2f} |")
    mil = report["million"]
    lines += [
        "",
        f"{mil['tasks']:,} no-op tasks through sweepkit: {mil['wall_s']:.1f} s ({mil['us_per_task']:.1f} µs per task), "
        f"driver peak memory {mil['driver_peak_rss_mb']:.0f} MB ({mil['driver_rss_before_mb']:.0f} MB before the sweep).",
        "",
        "Efficiency = serial time / (workers × wall time), median with median (best with best); "
        "overhead per task = (workers × median wall − median serial time) / tasks; the last column "
        "compares engines within each round (the host's speed drifts between rounds), median over rounds.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke test")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fits", type=int, default=10_000)
    parser.add_argument("--noops", type=int, default=20_000)
    parser.add_argument("--million", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--measure", nargs=5, metavar=("ENGINE", "WORKLOAD", "N", "WORKERS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        engine, workload, n, workers, out = args.measure
        return measure(engine, workload, int(n), int(workers), Path(out))
    if args.quick:
        args.rounds, args.fits, args.noops, args.million = 1, 1000, 2000, 20_000
    report = {"machine": machine(), "workers": args.workers, "rounds": args.rounds}
    report["elastic-net"] = bench_workload("elastic-net", args.fits, args.workers, args.rounds)
    report["no-op"] = bench_workload("no-op", args.noops, args.workers, args.rounds)
    report["million"] = million(args.million, args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if args.quick else "latest"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    print("\n" + markdown(report))


if __name__ == "__main__":
    main()
