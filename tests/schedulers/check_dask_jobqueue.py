"""Manual smoke check: dask-jobqueue against the real SGE / Slurm started by
sge.sh / slurm.sh. Not collected by pytest (no test_ prefix).

    /work/venv/bin/python tests/schedulers/check_dask_jobqueue.py sge slurm

For each scheduler: start a cluster on loopback, scale(2), wait for the
workers, run a map, cancel one worker job with qdel/scancel and time how long
the Dask scheduler takes to drop it, close, and check no job is left.
"""

import subprocess
import sys
import tempfile
import time

from dask.distributed import Client
from dask_jobqueue import SGECluster, SLURMCluster

CLUSTERS = {"sge": (SGECluster, ["qstat", "-u", "*"], "qdel"), "slurm": (SLURMCluster, ["squeue", "-h"], "scancel")}


def jobs_listed(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def check(kind):
    cluster_cls, list_cmd, cancel_cmd = CLUSTERS[kind]
    timings = {}
    with tempfile.TemporaryDirectory(prefix=f"sweepkit-{kind}-") as tmp:
        t0 = time.monotonic()
        cluster = cluster_cls(
            cores=1,
            memory="1GB",
            processes=1,
            interface="lo",
            log_directory=f"{tmp}/logs",
            local_directory=f"{tmp}/scratch",
            scheduler_options={"dashboard_address": "127.0.0.1:0"},
        )
        timings["cluster_created"] = time.monotonic() - t0
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:"), cluster.scheduler_address
        client = Client(cluster)
        t = time.monotonic()
        cluster.scale(2)
        client.wait_for_workers(2, timeout=120)
        timings["scale_2_workers"] = time.monotonic() - t
        t = time.monotonic()
        assert client.gather(client.map(lambda x: x * x, range(100))) == [x * x for x in range(100)]
        timings["map_100"] = time.monotonic() - t

        job_id = next(iter(cluster.workers.values())).job_id
        t = time.monotonic()
        subprocess.run([cancel_cmd, job_id], check=True, capture_output=True)
        while len(client.scheduler_info()["workers"]) > 1:
            assert time.monotonic() - t < 120, "worker still known after 120 s"
            time.sleep(0.05)
        timings[f"{cancel_cmd}_to_worker_gone"] = time.monotonic() - t

        t = time.monotonic()
        client.close()
        cluster.close()
        timings["close"] = time.monotonic() - t
        t = time.monotonic()
        while jobs_listed(list_cmd):
            assert time.monotonic() - t < 60, jobs_listed(list_cmd)
            time.sleep(0.2)
        timings["queue_empty_after_close"] = time.monotonic() - t
        timings["total"] = time.monotonic() - t0
    print(kind, " ".join(f"{k}={v:.2f}s" for k, v in timings.items()))


if __name__ == "__main__":
    for name in sys.argv[1:] or ["sge", "slurm"]:
        check(name)
