"""Provenance: what code, data, parameters and environment produced a run.

Fingerprints identify a sweep (function source, task list, seed, shared data);
the rest of the manifest describes where and when it ran. Nothing secret goes
in: no environment is recorded wholesale, and any value of a secret-looking
environment variable (``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*KEY*``, ...)
is masked wherever it would appear.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import inspect
import json
import os
import pickle
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .tasks import _Seeded

PACKAGES = [
    "sweepkit", "dask", "distributed", "dask-jobqueue", "numpy", "scipy", "pandas",
    "scikit-learn", "cloudpickle", "pyarrow", "synapseclient",
]
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|AUTH", re.I)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def function_identity(fn: Callable) -> dict[str, Any]:
    """Qualified name and a hash of the source (of the pickled function if there is no source)."""
    import cloudpickle

    try:
        source = inspect.getsource(fn).encode()
        how = "source"
    except (OSError, TypeError):
        source = cloudpickle.dumps(fn)
        how = "pickle"
    try:
        file = inspect.getsourcefile(fn)
    except TypeError:
        file = None
    return {
        "name": f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}",
        "file": file,
        f"{how}_sha256": hashlib.sha256(source).hexdigest(),
    }


def tasks_identity(tasks) -> dict[str, Any]:
    h = hashlib.sha256()
    for task in tasks:
        h.update(_canonical(task))
        h.update(b"\n")
    return {"count": len(tasks), "sha256": h.hexdigest(), "first": [_jsonable(t) for t in tasks[:3]]}


def _canonical(task: Mapping) -> bytes:
    try:
        return json.dumps(task, sort_keys=True, default=_encode).encode()
    except TypeError:
        return pickle.dumps(sorted(task.items()), protocol=4)


def _encode(obj: Any) -> Any:
    if isinstance(obj, _Seeded):
        return [type(obj).__name__, int(obj), sorted(obj.__dict__.items())]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return {"ndarray": obj.shape, "dtype": str(obj.dtype), "sha256": _array_hash(obj)}
    return {"type": _type_name(obj), "sha256": hashlib.sha256(pickle.dumps(obj, protocol=4)).hexdigest()}


def _jsonable(task: Mapping) -> dict:
    return json.loads(json.dumps(task, default=lambda o: o.item() if isinstance(o, np.generic) else repr(o)))


def fingerprint(obj: Any) -> dict[str, Any]:
    """Type, shape and a content hash of a shared object."""
    import cloudpickle

    info: dict[str, Any] = {"type": _type_name(obj)}
    if isinstance(obj, np.ndarray):
        info.update(shape=list(obj.shape), dtype=str(obj.dtype), sha256=_array_hash(obj))
    elif _type_name(obj).startswith("pandas."):
        import pandas as pd

        hashed = pd.util.hash_pandas_object(obj, index=True).to_numpy()
        extra = repr(getattr(obj, "columns", getattr(obj, "name", ""))).encode() + repr(obj.dtypes).encode()
        info.update(shape=list(obj.shape), sha256=hashlib.sha256(hashed.tobytes() + extra).hexdigest())
    else:
        info["sha256"] = hashlib.sha256(cloudpickle.dumps(obj)).hexdigest()
    return info


def _array_hash(a: np.ndarray) -> str:
    if a.dtype.hasobject:
        return hashlib.sha256(pickle.dumps(a, protocol=4)).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()


def _type_name(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def git_info(path: str | None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git repository holding ``path`` (a file or folder)."""
    folder = Path(path).resolve() if path else Path.cwd()
    folder = folder if folder.is_dir() else folder.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {
            "repository": git("rev-parse", "--show-toplevel"),
            "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "packages": versions,
        "host": socket.gethostname(),
        "user": _user(),
        "pid": os.getpid(),
    }


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return "?"


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    return sorted({v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= 6}, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Mask the value of every secret-looking environment variable found in ``text``."""
    for value in secret_values(environ):
        text = text.replace(value, "***")
    return text


def write_json(path: Path, data: dict) -> None:
    """Atomically replace ``path`` with ``data`` as JSON, secrets masked."""
    text = redact(json.dumps(data, indent=2, default=str, sort_keys=False))
    write_text(path, text + "\n")


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
