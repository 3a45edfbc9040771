#!/usr/bin/env bash
# Install, configure and run a real single-host Slurm (Debian's slurm-wlm and
# munge packages) for the test suite, as root and without systemd.
#
#   slurm.sh start   install if missing, configure, start daemons, check a job runs
#   slurm.sh stop    stop the daemons started here (by their recorded pids only)
#   slurm.sh status  show daemon pids and the node; exit 0 only if all is up
#
# Idempotent: `start` with everything up changes nothing and takes well under
# a second; after the daemons died it restarts them.
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
LOG_TAG=slurm

STATE_DIR=$STATE_ROOT/slurm
PACKAGES=(slurm-wlm slurm-client munge)
HOST=$(hostname -s)
CLUSTER=sweepkit
PARTITION=debug
CPUS=4 # more than the 2 real cores, like SGE's 4 slots (config_overrides allows it)
SLURM_CONF=/etc/slurm/slurm.conf
SLURM_STATE=/var/lib/slurm/sweepkit # ours alone: a state dir of another cluster name stops slurmctld
CTLD_STATE=$SLURM_STATE/slurmctld
SLURMD_SPOOL=$SLURM_STATE/slurmd
CHANGED=0 # set to 1 when this run started a daemon or changed the configuration

# ---------------------------------------------------------------- install

install_slurm() {
    if ! packages_installed "${PACKAGES[@]}"; then
        apt_install "${PACKAGES[@]}"
        CHANGED=1
    fi
    install -d -m 755 "$CTLD_STATE" "$SLURMD_SPOOL"
    # munge's postinst creates the key; make sure of it and of munged's dirs.
    install -d -m 700 -o munge -g munge /etc/munge /var/log/munge
    install -d -m 711 -o munge -g munge /var/lib/munge
    install -d -m 755 -o munge -g munge /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        setpriv --reuid=munge --regid=munge --init-groups mungekey --create
    fi
}

real_memory_mb() {
    # A little under the real memory, or slurmd drains the node ("Low RealMemory").
    echo $(($(mem_total_kib) / 1024 - 256))
}

slurm_conf() {
    cat <<EOF
# Written by tests/schedulers/slurm.sh: a single-host cluster on loopback.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
SlurmdParameters=config_overrides
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$CPUS RealMemory=$(real_memory_mb) State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

write_config() {
    local want
    want=$(slurm_conf)
    if [[ ! -e $SLURM_CONF || $(<"$SLURM_CONF") != "$want" ]]; then
        log "writing $SLURM_CONF"
        install -d -m 755 /etc/slurm
        printf '%s\n' "$want" >"$SLURM_CONF"
        CONF_CHANGED=1
        CHANGED=1
    fi
    # slurmctld refuses to start on a state directory of another cluster name.
    local name_file=$CTLD_STATE/clustername
    if [[ -e $name_file && $(<"$name_file") != "$CLUSTER" ]]; then
        log "discarding slurmctld state of cluster '$(<"$name_file")'"
        find "$CTLD_STATE" -mindepth 1 -delete
    fi
}

# ---------------------------------------------------------------- daemons

pidfile() { echo "$STATE_DIR/$1.pid"; }
running() { daemon_running "$(pidfile "$1")" "$1"; }

# start_daemon NAME CMD...: CMD runs in the foreground, so its pid is known
# without trusting a pid file the daemon writes itself.
start_daemon() {
    local name=$1
    shift
    log "starting $name"
    spawn_detached "$STATE_DIR/$name.log" "$@"
    echo "$SPAWNED_PID" >"$(pidfile "$name")"
    CHANGED=1
    # setsid and setpriv exec the daemon: wait until the pid carries its name.
    wait_for 5 "$name exec" running "$name" || { show_logs; die "$name exited at once"; }
    log "$name running, pid $SPAWNED_PID"
}

# After `kill -9` of a slurmstepd its socket stays in the spool directory and
# slurmd keeps reporting the job as running: drop sockets nobody listens on.
remove_stale_step_sockets() {
    local sock listening
    listening=$(awk 'NR > 1 && NF >= 8 {print $8}' /proc/net/unix)
    for sock in "$SLURMD_SPOOL"/*; do
        [[ -S $sock ]] || continue
        if ! grep -qxF "$sock" <<<"$listening"; then
            log "removing stale step socket $sock"
            rm -f "$sock"
        fi
    done
}

start_daemons() {
    install -d -m 755 "$STATE_ROOT" "$STATE_DIR"
    if ((${CONF_CHANGED:-0})) && { running slurmctld || running slurmd; }; then
        log "slurm.conf changed: restarting slurmctld and slurmd"
        stop_pidfile "$(pidfile slurmd)" slurmd 30
        stop_pidfile "$(pidfile slurmctld)" slurmctld 30
    fi

    if ! running munged; then
        # munged keeps every inherited fd open: spawn_detached closes them.
        start_daemon munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    fi
    wait_for 20 "munge works" munge_ok || { show_logs; die "munged does not answer"; }

    if ! running slurmctld; then
        start_daemon slurmctld /usr/sbin/slurmctld -D
    fi
    wait_for 30 "slurmctld answers" scontrol ping || { show_logs; die "slurmctld does not answer"; }

    remove_stale_step_sockets
    running slurmd || start_daemon slurmd /usr/sbin/slurmd -D
}

munge_ok() { munge -n </dev/null | unmunge >/dev/null; }

stop_daemons() {
    stop_pidfile "$(pidfile slurmd)" slurmd 30
    stop_pidfile "$(pidfile slurmctld)" slurmctld 30
    stop_pidfile "$(pidfile munged)" munged 10
}

show_logs() {
    local f
    for f in "$STATE_DIR"/*.log /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log /var/log/munge/munged.log; do
        [[ -s $f ]] || continue
        echo "--- tail $f" >&2
        tail -n 15 "$f" >&2
    done
}

# ---------------------------------------------------------------- checks

node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1; }

node_usable() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

wait_node_ready() {
    if ! wait_for 60 "node $HOST usable" node_usable; then
        sinfo -N -l >&2 || true
        sinfo -R >&2 || true
        show_logs
        die "node $HOST not usable (state '$(node_state)')"
    fi
}

run_test_job() {
    local out
    log "running a test job"
    if ! out=$(cd / && timeout 120 srun --job-name=sweepkit-check -N 1 -n 1 --mem=16 -t 1 /bin/true 2>&1); then
        echo "$out" >&2
        squeue >&2 || true
        show_logs
        die "test job did not run"
    fi
    log "test job ran"
}

# ---------------------------------------------------------------- actions

cmd_start() {
    require_root
    local t0=$SECONDS
    install -d -m 755 "$STATE_ROOT" "$STATE_DIR"
    install_slurm
    write_config
    start_daemons
    wait_node_ready
    if ((CHANGED)); then
        run_test_job
    fi
    log "Slurm up (munged pid $(read_pid "$(pidfile munged)"), slurmctld pid $(read_pid "$(pidfile slurmctld)"), slurmd pid $(read_pid "$(pidfile slurmd)"), partition $PARTITION, $((SECONDS - t0)) s)"
}

cmd_stop() {
    require_root
    stop_daemons
    log "Slurm stopped"
}

cmd_status() {
    local ok=0 name
    for name in munged slurmctld slurmd; do
        if running "$name"; then
            echo "$name: running, pid $(read_pid "$(pidfile "$name")")"
        else
            echo "$name: not running"
            ok=3
        fi
    done
    if ((ok == 0)); then
        sinfo -N -l && squeue || ok=3
    fi
    return "$ok"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
