"""sweepkit: run many independent tasks on one shared data set, serially or on a
Dask cluster, and get the results back as one object.

    from sweepkit import sweep, sweep_cluster, grid

    results = sweep(fit, grid(alpha=[0.1, 1.0]), shared={"X": X, "y": y}, seed=1)
    with sweep_cluster("local"):          # the only line that changes
        results = sweep(fit, grid(alpha=[0.1, 1.0]), shared={"X": X, "y": y}, seed=1)
    results.to_frame()
"""

from .cluster import ClusterError, Session, sweep_cluster
from .core import sweep
from .engine import task_seed
from .profiles import ProfileError
from .results import PENDING, Results, TaskError, TaskFailure
from .store import StoreError, StoreLocked, StoreMismatch, load
from .tasks import Fold, Replicate, Tasks, bootstrap, cv_folds, grid

try:
    from importlib.metadata import version as _version

    __version__ = _version("sweepkit")
except Exception:  # pragma: no cover - running from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "sweep", "sweep_cluster", "grid", "bootstrap", "cv_folds", "load", "task_seed",
    "Results", "TaskFailure", "TaskError", "PENDING", "Tasks", "Replicate", "Fold", "Session",
    "ClusterError", "ProfileError", "StoreError", "StoreLocked", "StoreMismatch", "__version__",
]
