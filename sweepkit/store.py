"""A durable run: every finished task on disk as it arrives, resumable, with provenance.

Layout of a store folder::

    manifest.json      what produced the run (see sweepkit.manifest) and its progress
    results.log        append-only records, each a batch of finished tasks
    inputs/            the function, tasks and shared objects (pickled), for verify
    job-script.sh      the script a batch-scheduler profile submits (if any)
    .lock              held by the driver writing the store

``results.log`` is a sequence of frames ``b"SWK1" | length | crc32 | payload``;
each frame is written with one ``write`` and fsynced. A crash can only leave a
torn last frame, which readers ignore and the next writer cuts off.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import struct
import sys
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import manifest as mf
from .engine import dumps
from .results import ERROR, OK, Results, TaskFailure
from .tasks import as_tasks

__all__ = ["open_store", "load", "StoreError", "StoreLocked", "StoreMismatch"]

MAGIC = b"SWK1"
HEADER = struct.Struct("<4sII")  # magic, payload length, crc32
LOG, MANIFEST, INPUTS, LOCK, JOB_SCRIPT = "results.log", "manifest.json", "inputs", ".lock", "job-script.sh"
FORMAT = 1  # of the store's files; a store of another format is refused, not misread


class StoreError(RuntimeError):
    """A store that cannot be used as asked."""


class StoreLocked(StoreError):
    """Another driver is writing to this store."""


class StoreMismatch(StoreError):
    """The store holds a different sweep than the one asked for."""


# -- the log ----------------------------------------------------------------------------
def read_frames(path: Path) -> tuple[list[bytes], int, str | None]:
    """Payloads of the whole frames in ``path``, the offset after the last one, and a
    problem if a complete frame is damaged (a torn tail is not a problem)."""
    frames: list[bytes] = []
    data = path.read_bytes() if path.exists() else b""
    pos = 0
    while pos + HEADER.size <= len(data):
        magic, length, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if magic != MAGIC:
            return frames, pos, f"{path}: no record starts at byte {pos} (the file was modified)"
        if end > len(data):
            break  # torn tail: a write cut short by a crash
        payload = data[pos + HEADER.size : end]
        if zlib.crc32(payload) != crc:
            return frames, pos, f"{path}: the record at byte {pos} fails its checksum (the file was modified)"
        frames.append(payload)
        pos = end
    return frames, pos, None


def frame(payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def stored_batches(path: Path, values: bool = True) -> Iterator[tuple[dict, list | None]]:
    """Every stored batch as ``(meta, values)``, in the order written (a task written
    twice appears twice; the last one counts). ``meta`` holds the task indices,
    statuses, durations, worker, seeds and error messages; reading it needs no user
    code. ``values=False`` skips unpickling the values."""
    frames, _, problem = read_frames(path)
    if problem:
        raise StoreError(problem)
    for payload in frames:
        meta, blob = pickle.loads(payload)
        yield meta, pickle.loads(blob) if values else None


def records(path: Path) -> Iterator[tuple]:
    """Every stored task ``(index, status, value, duration, worker, seed)``, in the order written."""
    for meta, values in stored_batches(path):
        n = len(meta["indices"])
        yield from zip(meta["indices"], meta["statuses"], values, meta["durations"], [meta["worker"]] * n, meta["seeds"] or [None] * n)


# -- opening a store for a sweep ------------------------------------------------------------
class Store:
    """An open store, locked by this driver until :meth:`close`. Nothing is written
    to it before :meth:`begin`."""

    def __init__(self, path: Path, lock_fd: int, info: dict, seed: int, new_inputs: tuple | None):
        self.path, self._lock_fd, self.info, self.seed = path, lock_fd, info, seed
        self._new_inputs = new_inputs  # (fn, tasks, shared) of a new run, saved for `verify`
        self._log: int | None = None
        self.written = 0

    def load_into(self, results: Results) -> None:
        _load_batches(results, self.path / LOG)

    def begin(self, session) -> None:
        """Record where this driver runs the sweep (profile, options, job script) and,
        for a new run, its inputs; then open the log."""
        info = self.info
        info["status"] = "running"
        info["sessions"].append(_session_info(session))
        if session is not None and (script := session.backend.job_script(session.profile.options)):
            mf.write_text(self.path / JOB_SCRIPT, mf.redact(script))
            info["job_script"] = JOB_SCRIPT
        if self._new_inputs is not None:
            _save_inputs(self.path, *self._new_inputs)
        _cut_torn_tail(self.path / LOG)
        mf.write_json(self.path / MANIFEST, info)
        self._log = os.open(self.path / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, indices: list[int], res) -> None:
        meta = {
            "indices": list(indices), "statuses": res.statuses, "durations": res.durations, "worker": res.worker,
            "seeds": res.seeds, "errors": {i: v.error for i, v, s in zip(indices, res.values, res.statuses) if s == ERROR},
        }
        values = res.packed if res.packed is not None else _dumps(res.values)
        os.write(self._log, frame(pickle.dumps((meta, values), protocol=5)))
        os.fsync(self._log)
        self.written += len(indices)

    def close(self, results: Results) -> None:
        """Record the outcome in the manifest (if the run began) and release the lock."""
        try:
            if self._log is None:
                return
            counts = results.counts()
            session = self.info["sessions"][-1]
            session.update(finished=mf.now(), computed=self.written)
            self.info.update(
                finished=mf.now() if counts["pending"] == 0 else None,
                status="complete" if counts["pending"] == 0 else "incomplete",
                counts=counts,
                results_sha256=results_digest(results),
            )
            mf.write_json(self.path / MANIFEST, self.info)
        finally:
            if self._log is not None:
                os.close(self._log)
            os.close(self._lock_fd)


def open_store(path, fn, tasks, shared: dict, seed: int | None, uses_rng: bool) -> Store:
    """Open (or create) and lock the store of this sweep; refuse if it holds a different
    one. This runs before any cluster starts, so a refusal costs nothing."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock(path)
    try:
        identity = {
            "function": mf.function_identity(fn),
            "tasks": mf.tasks_identity(tasks),
            "shared": {name: mf.fingerprint(obj) for name, obj in shared.items()},
        }
        old = _read_manifest(path)
        if old is not None:
            _check_same(path, old, identity, seed)
            seed = old["seed"]
        else:
            seed = int(seed if seed is not None else np.random.SeedSequence().entropy)
        info = old or {
            "format": FORMAT,
            "run_id": uuid.uuid4().hex,
            "created": mf.now(),
            **identity,
            "seed": seed,
            "uses_rng": uses_rng,
            "code": mf.git_info(identity["function"]["file"] or _main_file()),
            "sessions": [],
        }
        return Store(path, lock_fd, info, seed, None if old else (fn, tasks, shared))
    except BaseException:
        os.close(lock_fd)
        raise


def _lock(path: Path) -> int:
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLocked(
            f"store {path} is in use by another sweep ({holder}); wait for it to finish, "
            "or give this sweep another store folder"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": mf.environment()["host"], "since": mf.now()}).encode(), 0)
    return fd


def _check_same(path: Path, old: dict, new: dict, seed: int | None) -> None:
    changed = []
    if _code_hash(old["function"]) != _code_hash(new["function"]):  # a name alone (__main__.f vs module.f) is no change
        before, now = old["function"]["name"], new["function"]["name"]
        changed.append(f"the function's code ({now} was edited)" if before == now else f"the function ({before} -> {now})")
    if old["tasks"]["sha256"] != new["tasks"]["sha256"]:
        changed.append(f"the tasks ({old['tasks']['count']} stored, {new['tasks']['count']} now, or their parameters differ)")
    if seed is not None and seed != old["seed"]:
        changed.append(f"the seed ({old['seed']} stored, {seed} now)")
    for name in sorted(set(old["shared"]) | set(new["shared"])):
        if old["shared"].get(name) != new["shared"].get(name):
            what = "added" if name not in old["shared"] else "removed" if name not in new["shared"] else "its contents differ"
            changed.append(f"shared object {name!r} ({what})")
    if changed:
        raise StoreMismatch(
            f"store {path} holds a different sweep; changed since it was started: {'; '.join(changed)}. "
            "To start a new run, use another store folder (store= in Python, --out for a recipe) or delete this one; "
            "to resume the stored run, use the same function, tasks, seed and shared data (the same options, for a recipe)."
        )


def _code_hash(identity: dict) -> str | None:
    return identity.get("source_sha256") or identity.get("pickle_sha256")


def _session_info(session) -> dict[str, Any]:
    info: dict[str, Any] = {"started": mf.now(), "environment": mf.environment()}
    if session is None:
        info["cluster"] = {"profile": "serial"}
    else:
        p = session.profile
        info["cluster"] = {"profile": p.name, "backend": p.backend, "source": p.source, "options": p.options}
    return info


def _save_inputs(path: Path, fn, tasks, shared: dict) -> None:
    """Pickle the function, tasks and shared objects, so the run can be recomputed.

    The function's own module is stored by value when it is the user's code (not an
    installed package), so ``verify`` works from any folder and machine."""
    import cloudpickle

    folder = path / INPUTS
    folder.mkdir(exist_ok=True)
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    by_value = module is not None and module.__name__ != "__main__" and _is_users_code(module)
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        for name, obj in [("function", fn), ("tasks", tasks), ("shared", shared)]:
            tmp = folder / f".{name}.pkl.tmp"
            with open(tmp, "wb") as f:
                cloudpickle.dump(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / f"{name}.pkl")
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)


def _is_users_code(module) -> bool:
    """A module from a file outside the Python installation (site-packages, stdlib)."""
    file = getattr(module, "__file__", None)
    if not file or "." in module.__name__:  # packages are imported by name, as the user installed them
        return False
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return not any(os.path.abspath(file).startswith(os.path.abspath(p) + os.sep) for p in prefixes)


def load_input(path, name: str) -> Any:
    """One of the inputs a store was created with: ``function``, ``tasks`` or ``shared``."""
    file = Path(path) / INPUTS / f"{name}.pkl"
    try:
        with open(file, "rb") as f:
            obj = pickle.load(f)
    except FileNotFoundError:
        raise StoreError(f"{file} is missing: this store cannot be recomputed") from None
    except (ImportError, AttributeError) as exc:
        raise StoreError(
            f"cannot load the stored {name} ({type(exc).__name__}: {exc}): it needs code that is not importable here; "
            "run from the folder of the script that made the run, or install its code"
        ) from None
    return as_tasks(obj) if name == "tasks" else obj


def load_inputs(path) -> tuple[Any, Any, dict]:
    """The function, tasks and shared objects a store was created with."""
    return load_input(path, "function"), load_input(path, "tasks"), load_input(path, "shared")


def _cut_torn_tail(log: Path) -> None:
    _, end, problem = read_frames(log)
    if problem:
        raise StoreError(f"{problem}; refusing to append to a damaged store")
    if log.exists() and log.stat().st_size > end:
        with open(log, "r+b") as f:
            f.truncate(end)


def _read_manifest(path: Path) -> dict | None:
    try:
        info = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path / MANIFEST} is not valid JSON ({exc}); is {path} a sweepkit store?") from None
    if info.get("format") != FORMAT:
        raise StoreError(
            f"{path} was written in store format {info.get('format', 'unknown')}, and this sweepkit reads format {FORMAT}; "
            "read it with the sweepkit version that wrote it, or start a new run in another folder"
        )
    return info


def _main_file() -> str | None:
    import __main__

    return getattr(__main__, "__file__", None)


def _dumps(values: list) -> bytes:
    try:
        return dumps(values)
    except Exception:  # an exception object that will not pickle: keep its text
        return dumps([_text_only(v) for v in values])


def _text_only(value: Any) -> Any:
    if isinstance(value, TaskFailure):
        return TaskFailure(value.index, value.params, value.error, value.traceback, None)
    return value


def results_digest(results: Results) -> str:
    """A hash of every task's status and value, in task order."""
    h = hashlib.sha256()
    for i, value in enumerate(results):
        status = int(results._status[i])
        h.update(pickle.dumps((i, status, value.error if status == ERROR else value if status == OK else None), protocol=4))
    return h.hexdigest()


# -- reading a store ------------------------------------------------------------------------
def read_manifest(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path} does not exist")
    found = _read_manifest(path) if path.is_dir() else None
    if found is None:
        inside = sorted(str(m.parent) for m in path.glob(f"*/{MANIFEST}")) if path.is_dir() else []
        hint = f"; the stores inside it: {', '.join(inside)}" if inside else "; give the folder passed as store= or --out"
        raise StoreError(f"{path} is not a sweepkit store (no {MANIFEST}){hint}")
    return found


def load(path) -> Results:
    """The :class:`Results` of a stored run (finished or not; tasks without a result
    yet are ``PENDING``). Safe to call while the run is still writing."""
    path = Path(path)
    info = read_manifest(path)
    tasks = load_input(path, "tasks")
    results = Results(tasks, info["seed"], uses_rng=info["uses_rng"], info=info)
    _load_batches(results, path / LOG)
    return results


def _load_batches(results: Results, log: Path) -> None:
    for meta, values in stored_batches(log):
        results._record_many(meta["indices"], values, meta["statuses"], meta["durations"], meta["worker"], meta["seeds"])
