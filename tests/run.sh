#!/usr/bin/env bash
# Install everything the tests need and run them: the README's test command, and CI's.
#
#   bash tests/run.sh [pytest arguments]
#
# Creates .venv (if missing) with sweepkit and all its extras, starts a real Son of
# Grid Engine and a real Slurm on this machine (root and Debian/Ubuntu needed; see
# tests/schedulers/README.md), then runs pytest. SWEEPKIT_SKIP_SCHEDULERS=1 skips
# the scheduler set-up and the tests that need it (never in CI: there they must run).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[all]"

if [ "${SWEEPKIT_SKIP_SCHEDULERS:-0}" = 1 ]; then
  if [ -n "${CI:-}" ]; then
    echo "tests/run.sh: SWEEPKIT_SKIP_SCHEDULERS=1 is not allowed in CI: the scheduler tests must run" >&2
    exit 2
  fi
  echo "tests/run.sh: SWEEPKIT_SKIP_SCHEDULERS=1: not starting SGE and Slurm; their tests are skipped" >&2
else
  bash tests/schedulers/sge.sh start
  bash tests/schedulers/slurm.sh start
fi

exec .venv/bin/python -m pytest "$@"
