# Helpers shared by sge.sh and slurm.sh. Source it, do not run it.
# shellcheck shell=bash

STATE_ROOT=/run/sweepkit-schedulers
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${LOG_TAG:-schedulers}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
}

packages_installed() {
    local pkg status
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [[ $status == "install ok installed" ]] || return 1
    done
}

# apt-get install without letting maintainer scripts start any service: the
# daemons we need are started (and tracked by pid) by these scripts instead.
apt_install() {
    local added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    log "apt-get install $*"
    local rc=0
    {
        apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                --no-install-recommends -o Dpkg::Options::=--force-confold "$@"
    } >"$STATE_ROOT/apt.log" 2>&1 || rc=$?
    if ((added_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    if ((rc != 0)); then
        tail -n 30 "$STATE_ROOT/apt.log" >&2
        die "apt-get failed (full log: $STATE_ROOT/apt.log)"
    fi
}

# True if PID is alive, is not a zombie and its command name is NAME (guards
# against a recycled pid). A killed daemon can linger as a zombie under init.
pid_alive() {
    local pid=$1 name=$2 stat comm
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    comm=${stat#*(}
    comm=${comm%%)*}
    stat=${stat##*) }
    [[ ${stat:0:1} != Z && ${stat:0:1} != X && $comm == "${name:0:15}" ]]
}

# read_pid FILE -> prints the pid stored in FILE (empty if none).
read_pid() { if [[ -r $1 ]]; then tr -dc '0-9' <"$1"; fi; }

# daemon_running PIDFILE NAME
daemon_running() {
    local pid
    pid=$(read_pid "$1")
    [[ -n $pid ]] && pid_alive "$pid" "$2"
}

# spawn_detached LOGFILE CMD... : run CMD in its own session with stdin from
# /dev/null, stdout+stderr appended to LOGFILE and every other inherited fd
# closed, so that it never holds the caller's (e.g. a CI step's) pipes open.
# Sets SPAWNED_PID. The subshell is not a process-group leader, so setsid does
# not fork and SPAWNED_PID is the pid of CMD itself once it has exec'd.
spawn_detached() {
    local logfile=$1
    shift
    (
        for fd in "/proc/$BASHPID/fd/"*; do
            fd=${fd##*/}
            if [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)); then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        exec setsid "$@" </dev/null >>"$logfile" 2>&1
    ) &
    # shellcheck disable=SC2034 # read by the sourcing script
    SPAWNED_PID=$!
}

# stop_pidfile PIDFILE NAME [TIMEOUT_S]: SIGTERM the recorded pid, wait, then
# SIGKILL. Only ever signals the recorded pid, and only if it still is NAME.
stop_pidfile() {
    local pidfile=$1 name=$2 timeout=${3:-20} pid i
    pid=$(read_pid "$pidfile")
    if [[ -n $pid ]] && pid_alive "$pid" "$name"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < timeout * 10; i++)); do
            pid_alive "$pid" "$name" || break
            sleep 0.1
        done
        if pid_alive "$pid" "$name"; then
            log "$name (pid $pid) ignored SIGTERM for ${timeout}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
    local timeout=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "gave up after ${timeout}s waiting for: $what"
            return 1
        fi
        sleep 0.2
    done
}

mem_total_kib() { awk '/^MemTotal:/ {print $2}' /proc/meminfo; }
