"""Reading stored runs: status, result tables, and verification by recomputation."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from . import engine
from .results import OK, Results
from .store import LOG, StoreError, load, load_inputs, read_manifest, results_digest, stored_batches


def status_text(path: Path) -> str:
    """Progress and provenance of a stored run, from its manifest and log alone (no user
    code is loaded, so it works anywhere, also while the run is writing)."""
    info = read_manifest(path)
    status: dict[int, int] = {}
    durations: dict[int, float] = {}
    errors: dict[int, str] = {}
    for meta, _ in stored_batches(Path(path) / LOG, values=False):
        for i, s, d in zip(meta["indices"], meta["statuses"], meta["durations"]):
            status[i], durations[i] = s, d
            errors.pop(i, None)
        errors.update(meta["errors"])
    total = info["tasks"]["count"]
    ok = sum(1 for s in status.values() if s == OK)
    failed = len(status) - ok
    d = np.array([v for v in durations.values() if v == v])  # NaN: a task whose worker died
    last = info["sessions"][-1] if info.get("sessions") else {}
    code = info.get("code") or {}
    fn = info["function"]
    lines = [
        f"run {info['run_id']}  ({info.get('status', '?')})",
        f"  function  {fn['name']}" + (f"  ({fn['file']})" if fn.get("file") else ""),
        f"  tasks     {total}  (sha256 {info['tasks']['sha256'][:12]})",
        f"  seed      {info['seed']}",
        "  code      " + (f"{code['repository']} @ {code['commit'][:12]}{' (dirty)' if code['dirty'] else ''}" if code else "not in a git repository"),
        f"  cluster   {last.get('cluster', {}).get('profile', '?')} (last of {len(info.get('sessions', []))} session(s))",
        f"  created   {info['created']}" + (f", finished {info['finished']}" if info.get("finished") else ""),
        f"done {len(status)} of {total}: {ok} ok, {failed} failed, {total - len(status)} pending",
    ]
    if d.size:
        lines.append(f"task time: total {d.sum():.1f} s, mean {d.mean() * 1e3:.2f} ms, median {np.median(d) * 1e3:.2f} ms, max {d.max():.3f} s")
    for i in sorted(errors)[:5]:
        lines.append(f"  failed task {i}: {errors[i]}")
    if len(errors) > 5:
        lines.append(f"  ... and {len(errors) - 5} more failures (sweepkit results shows them all)")
    return "\n".join(lines)


def write_table(frame, output: Path) -> Path:
    """Write a results table as Parquet or CSV, by ``output``'s suffix, and return the path
    written. Parquet falls back to CSV (same name, ``.csv``) when pyarrow is missing;
    values Parquet cannot hold (fitted models, arrays of mixed type) are written as text."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".parquet":
        try:
            frame.to_parquet(output, index=False)
            return output
        except ImportError:
            output = output.with_suffix(".csv")
        except Exception:  # pyarrow cannot convert some object column
            frame = frame.copy()
            for col in frame.columns[frame.dtypes == object]:
                frame[col] = frame[col].map(lambda v: v if v is None or isinstance(v, str) else repr(v))
            frame.to_parquet(output, index=False)
            return output
    frame.map(_csv_cell).to_csv(output, index=False)
    return output


def _csv_cell(v: Any) -> Any:
    """Arrays and lists as JSON lists (``[3, 17, 42]``): one line, and readable back."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    return json.dumps(v) if isinstance(v, (list, tuple)) else v


def verify(path: Path, sample: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """Recompute a sample of finished tasks serially, from the stored inputs, and
    compare each with the stored result (floats must match bitwise)."""
    path = Path(path)
    info = read_manifest(path)
    stored = load(path)
    fn, tasks, shared = load_inputs(path)
    report = []
    from .manifest import fingerprint

    for name, obj in shared.items():
        if fingerprint(obj) != info["shared"].get(name):
            report.append({"task": "-", "result": "mismatch", "detail": f"stored input shared[{name!r}] differs from its fingerprint"})
    if info.get("results_sha256") and info.get("status") == "complete" and results_digest(stored) != info["results_sha256"]:
        report.append({"task": "-", "result": "mismatch", "detail": "results.log no longer matches the digest in manifest.json"})
    ok = np.flatnonzero(stored._status == OK)
    if not ok.size:
        raise StoreError(f"{path} has no finished task to verify")
    chosen = np.sort(np.random.default_rng(seed).choice(ok, size=min(sample, ok.size), replace=False))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        fresh = [
            engine.run_batch(fn, tasks, engine.Batch([i]), shared, stored.seed, info["uses_rng"], False, in_process=True)
            for i in chosen.tolist()
        ]
    for i, res in zip(chosen.tolist(), fresh):
        if res.statuses[0] != OK:
            report.append({"task": i, "result": "mismatch", "detail": f"recomputing raised {res.values[0].error}"})
        elif same(res.values[0], stored[i]):
            report.append({"task": i, "result": "match", "detail": ""})
        else:
            report.append({"task": i, "result": "mismatch", "detail": f"stored {_brief(stored[i])}, recomputed {_brief(res.values[0])}"})
    return report


def same(a: Any, b: Any) -> bool:
    """Exact equality: floats bitwise (NaN equals NaN), containers element by element."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if hasattr(a, "equals"):  # pandas
        return bool(a.equals(b))
    try:
        return bool(a == b) or pickle.dumps(a) == pickle.dumps(b)
    except Exception:
        return pickle.dumps(a) == pickle.dumps(b)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."
