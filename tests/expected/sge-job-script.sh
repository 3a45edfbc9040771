#!/usr/bin/env bash

#$ -N sweepkit-worker
#$ -q long.q
#$ -P genomics
#$ -l mem_free=3G
#$ -l h_rt=04:00:00
#$ -e /home/alice/project/logs/
#$ -o /home/alice/project/logs/
#$ -cwd
#$ -j y
#$ -pe smp 2
#$ -l h=node*
export DASK_DISTRIBUTED__ADMIN__LOW_LEVEL_LOG_LENGTH=16
export DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL=2s
export DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=500ms
export DASK_DISTRIBUTED__ADMIN__TICK__LIMIT=30s
export DASK_DISTRIBUTED__NANNY__PRELOAD='["sweepkit.worker_setup"]'
export DASK_DISTRIBUTED__SCHEDULER__ACTIVE_MEMORY_MANAGER__START=False
export DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL=500ms
export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False
export DASK_LOGGING__DISTRIBUTED=warning
export OMP_PROC_BIND=close
export PYTHONPATH=/home/alice/project/src
cd /home/alice/project
module load gcc/12
/opt/envs/sweep/bin/python -m distributed.cli.dask_worker tcp://<insert-scheduler-address-here>:8786 --name sweepkit-0 --nthreads 2 --memory-limit 6.00GiB --nanny --death-timeout 60 --local-directory $TMPDIR
