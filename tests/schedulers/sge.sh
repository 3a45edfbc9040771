#!/usr/bin/env bash
# Install, configure and run a real single-host Son of Grid Engine (Debian's
# gridengine-* packages) for the test suite, as root and without systemd.
#
#   sge.sh start   install if missing, configure, start daemons, check a job runs
#   sge.sh stop    stop the daemons started here (by their recorded pids only)
#   sge.sh status  show daemon pids and the queue; exit 0 only if all is up
#
# Idempotent: `start` with everything up changes nothing and takes well under
# a second; after the daemons died it restarts them.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$SCRIPT_DIR/common.sh"
LOG_TAG=sge

export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
SGE_SPOOL=/var/spool/gridengine
STATE_DIR=$STATE_ROOT/sge
QMASTER_PIDFILE=$STATE_DIR/qmaster.pid
EXECD_PIDFILE=$STATE_DIR/execd.pid
CONFIG_STAMP=$STATE_DIR/configured
PACKAGES=(gridengine-master gridengine-exec gridengine-client gridengine-common)
HOST=$(hostname)
QUEUE=all.q
SLOTS=4
CHANGED=0 # set to 1 when this run started a daemon or changed the configuration

# ---------------------------------------------------------------- install

install_sge() {
    if ! packages_installed "${PACKAGES[@]}"; then
        # Without these answers the postinst scripts leave no cluster and an
        # empty act_qmaster file.
        debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string $SGE_CELL
gridengine-client shared/gridenginemaster string $HOST
gridengine-master shared/gridenginemaster string $HOST
gridengine-exec shared/gridenginemaster string $HOST
EOF
        apt_install "${PACKAGES[@]}"
        CHANGED=1
    fi
    init_cell
}

# Normally done by gridengine-master's postinst; redone here if the packages
# were installed without the debconf answers.
init_cell() {
    local common=$SGE_ROOT/$SGE_CELL/common d
    if [[ ! -e $SGE_SPOOL/spooldb/sge ]]; then
        log "initialising cell $SGE_CELL"
        for d in "$SGE_ROOT" "$SGE_ROOT/$SGE_CELL" "$common" "$SGE_SPOOL/qmaster" \
            "$SGE_SPOOL/qmaster/job_scripts" "$SGE_SPOOL/spooldb" "$SGE_SPOOL/execd"; do
            install -d -m 755 -o sgeadmin -g sgeadmin "$d"
        done
        [[ -e $common/bootstrap ]] ||
            install -m 644 -o sgeadmin -g sgeadmin /usr/share/gridengine/default-bootstrap "$common/bootstrap"
        su -s /bin/sh -c "/usr/share/gridengine/scripts/init_cluster $SGE_ROOT $SGE_CELL $SGE_SPOOL/spooldb sgeadmin" \
            sgeadmin >"$STATE_DIR/init_cluster.log" 2>&1 ||
            { cat "$STATE_DIR/init_cluster.log" >&2; die "init_cluster failed"; }
        CHANGED=1
    fi
    write_if_changed "$common/act_qmaster" "$HOST"
    write_if_changed "$common/host_aliases" "$(host_aliases_line)"
}

# The host name resolves to 127.0.0.1, which reverse-resolves to another name
# (`localhost` here); qmaster then refuses its own clients unless told that
# both names are the same host.
host_aliases_line() {
    local ip names
    ip=$(getent ahostsv4 "$HOST" | awk 'NR == 1 {print $1}')
    names=$( { getent hosts "${ip:-127.0.0.1}"; getent hosts 127.0.0.1; } |
        awk -v h="$HOST" '{for (i = 2; i <= NF; i++) if ($i != h && !seen[$i]++) printf " %s", $i}')
    echo "$HOST$names"
}

# write_if_changed FILE CONTENT: daemons read these files at start-up only,
# so a change means running daemons must be restarted.
write_if_changed() {
    local file=$1 content=$2
    if [[ ! -e $file || $(<"$file") != "$content" ]]; then
        log "writing $file: $content"
        printf '%s\n' "$content" >"$file"
        chown sgeadmin:sgeadmin "$file"
        chmod 644 "$file"
        RESTART_DAEMONS=1
    fi
}

# ---------------------------------------------------------------- daemons

# Daemons get a small fixed environment: jobs inherit execd's environment.
sge_daemon_env=(env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
    LANG=C.UTF-8 SGE_ROOT="$SGE_ROOT" SGE_CELL="$SGE_CELL")

qmaster_running() { daemon_running "$QMASTER_PIDFILE" sge_qmaster; }
execd_running() { daemon_running "$EXECD_PIDFILE" sge_execd; }

# start_daemon NAME PIDFILE PIDFILE_ENV_VAR: both SGE daemons fork themselves
# into the background and write their pid to the file named by the variable.
start_daemon() {
    local name=$1 pidfile=$2 pidvar=$3
    rm -f "$pidfile"
    log "starting $name"
    spawn_detached "$STATE_DIR/$name.log" "${sge_daemon_env[@]}" "$pidvar=$pidfile" "/usr/sbin/$name"
    # The first process exits after forking; execd writes its pid file only
    # once it has registered with qmaster.
    if ! wait_for 60 "$name pid file" daemon_running "$pidfile" "$name"; then
        show_logs
        die "$name did not start"
    fi
    log "$name running, pid $(read_pid "$pidfile")"
    CHANGED=1
}

start_daemons() {
    chown sgeadmin:sgeadmin "$STATE_DIR" # qmaster writes its pid file as sgeadmin
    if ((${RESTART_DAEMONS:-0})) && { qmaster_running || execd_running; }; then
        log "host name files changed: restarting daemons"
        stop_daemons
    fi
    if ! qmaster_running; then
        start_daemon sge_qmaster "$QMASTER_PIDFILE" SGE_QMASTER_PIDFILE
        QMASTER_STARTED=1
        wait_for 30 "qmaster answers" qconf -sh || { show_logs; die "qmaster does not answer"; }
    fi
}

start_execd() {
    # A running execd takes about 30 s to notice a new qmaster; restarting it
    # is faster (its jobs keep running under their shepherds).
    if ((${QMASTER_STARTED:-0})) && execd_running; then
        stop_pidfile "$EXECD_PIDFILE" sge_execd 30
    fi
    execd_running || start_daemon sge_execd "$EXECD_PIDFILE" SGE_EXECD_PIDFILE
}

stop_daemons() {
    # qmaster takes a few seconds for its controlled shutdown.
    stop_pidfile "$EXECD_PIDFILE" sge_execd 30
    stop_pidfile "$QMASTER_PIDFILE" sge_qmaster 30
}

show_logs() {
    local f
    for f in "$STATE_DIR"/*.log "$SGE_SPOOL"/qmaster/messages "$SGE_SPOOL"/execd/*/messages; do
        [[ -s $f ]] || continue
        echo "--- tail $f" >&2
        tail -n 15 "$f" >&2
    done
}

# ---------------------------------------------------------------- configuration

# qconf_q ARGS...: run qconf, show its output only when it fails.
qconf_q() {
    local out
    out=$(qconf "$@" 2>&1) || { echo "$out" >&2; die "qconf $* failed"; }
    CHANGED=1
}

# ensure_attrs SHOW_CMD MODIFY_OPT FILENAME KEY VALUE [KEY VALUE...]
# Reads an "attribute value" listing with SHOW_CMD, and if any KEY differs
# writes the edited listing to FILENAME and loads it with `qconf MODIFY_OPT`.
ensure_attrs() {
    local show=$1 modify=$2 filename=$3 current file key value sed_args=()
    shift 3
    current=$($show | grep -v '^#')
    while (($#)); do
        key=$1 value=$2
        shift 2
        if [[ $(awk -v k="$key" '$1 == k {print $2}' <<<"$current") != "$value" ]]; then
            sed_args+=(-e "s|^${key}[[:space:]].*|$key $value|")
        fi
    done
    ((${#sed_args[@]})) || return 0
    log "qconf $modify: ${sed_args[*]}"
    file=$WORK_DIR/$filename # -Mconf takes the configuration name from the file name
    sed "${sed_args[@]}" <<<"$current" >"$file"
    qconf_q "$modify" "$file"
}

# ensure_complex NAME YES|NO: make NAME requestable, and consumable or not.
ensure_complex() {
    local name=$1 consumable=$2 file=$WORK_DIR/complex
    if [[ $(qconf -sc | awk -v n="$name" '$1 == n {print $5 $6}') != "YES$consumable" ]]; then
        qconf -sc | awk -v n="$name" -v c="$consumable" '$1 == n {$5 = "YES"; $6 = c} {print}' >"$file"
        log "complex $name: requestable YES, consumable $consumable"
        qconf_q -Mc "$file"
    fi
}

in_list() { qconf "$1" 2>/dev/null | grep -qx "$2"; }

configure_sge() {
    local tmp=$WORK_DIR mem
    in_list -sm root || qconf_q -am root
    in_list -sh "$HOST" || qconf_q -ah "$HOST"
    in_list -ss "$HOST" || qconf_q -as "$HOST"

    # Root runs the jobs in tests (min_uid 1000 rejects them); unix_behavior
    # honours a job script's #! line.
    ensure_attrs "qconf -sconf global" -Mconf global \
        min_uid 0 min_gid 0 shell_start_mode unix_behavior
    # schedd_job_info makes `qstat -j ID` say why a job cannot be scheduled.
    ensure_attrs "qconf -ssconf" -Msconf sched_conf \
        schedule_interval 0:0:1 schedd_job_info true

    # A request for more memory than the host has must stay pending with a
    # readable reason: mem_free is a consumable and h_vmem a fixed limit, both
    # set to the host's real memory. h_vmem must not be a consumable: its
    # default (0) would then give every job that does not request it a 10 MiB
    # address-space limit (Python dies at start-up with MemoryError).
    ensure_complex mem_free YES
    ensure_complex h_vmem NO
    if ! qconf -se "$HOST" >/dev/null 2>&1; then
        qconf -se template | grep -vE '^(load_values|processors)[[:space:]]' |
            sed "s/^hostname .*/hostname $HOST/" >"$tmp/exechost"
        qconf_q -Ae "$tmp/exechost"
    fi
    mem="h_vmem=$(mem_total_kib)K,mem_free=$(mem_total_kib)K"
    if [[ $(qconf -se "$HOST" | awk '$1 == "complex_values" {print $2}') != "$mem" ]]; then
        qconf_q -rattr exechost complex_values "$mem" "$HOST"
    fi

    if ! qconf -shgrp @allhosts >/dev/null 2>&1; then
        printf 'group_name @allhosts\nhostlist %s\n' "$HOST" >"$tmp/hostgroup"
        qconf_q -Ahgrp "$tmp/hostgroup"
    fi
    # The default queue template names the make/smp/mpi parallel environments,
    # which do not exist until added.
    qconf -sp smp >/dev/null 2>&1 || qconf_q -Ap /usr/share/gridengine/util/resources/pe/smp

    # load_thresholds NONE: a busy 2-core machine must not stop scheduling.
    local queue_attrs=(hostlist @allhosts load_thresholds NONE pe_list smp slots "$SLOTS"
        shell /bin/bash shell_start_mode unix_behavior)
    if qconf -sq "$QUEUE" >/dev/null 2>&1; then
        ensure_attrs "qconf -sq $QUEUE" -Mq "$QUEUE" "${queue_attrs[@]}"
    else
        # `qconf -sq` without a name prints the template.
        ensure_attrs "qconf -sq" -Aq "$QUEUE" qname "$QUEUE" "${queue_attrs[@]}"
    fi
}

config_stamp() {
    { cat "$SCRIPT_DIR/sge.sh" "$SCRIPT_DIR/common.sh"
      echo "$HOST $(mem_total_kib) $(read_pid "$QMASTER_PIDFILE")"; } | sha256sum | cut -c 1-16
}

# ---------------------------------------------------------------- checks

# States of the queue instance on this host: "" when healthy, "u" while execd
# has not reported yet, "E" after a failed job start, "-" if qstat fails...
queue_states() {
    qstat -f -q "$QUEUE@$HOST" 2>/dev/null |
        awk -v q="$QUEUE@$HOST" '$1 == q {found = 1; print (NF >= 6 ? $6 : "")} END {if (!found) print "-"}'
}
queue_ready() { [[ -z $(queue_states) ]]; }

wait_queue_ready() {
    local states
    states=$(queue_states)
    [[ -z $states ]] && return 0
    if [[ $states == *E* ]]; then
        log "clearing error state of $QUEUE@$HOST"
        qmod -c "$QUEUE@$HOST" >/dev/null
    fi
    if ! wait_for 60 "queue instance ready" queue_ready; then
        qstat -f >&2 || true
        show_logs
        die "queue $QUEUE@$HOST not ready (states '$(queue_states)')"
    fi
}

run_test_job() {
    local out
    log "submitting a test job"
    if ! out=$(cd / && timeout 120 qsub -sync y -b y -N sweepkit-check -o /dev/null -e /dev/null /bin/true 2>&1); then
        echo "$out" >&2
        qstat -f >&2 || true
        show_logs
        die "test job did not run"
    fi
    log "test job ran: $(tail -n 1 <<<"$out")"
}

# ---------------------------------------------------------------- actions

cmd_start() {
    require_root
    local t0=$SECONDS
    WORK_DIR=$(mktemp -d)
    trap 'rm -rf "$WORK_DIR"' EXIT
    install -d -m 755 "$STATE_ROOT" "$STATE_DIR"
    install_sge
    start_daemons
    # Checking the whole configuration takes ~17 qconf calls (1-3 s): skip it
    # when this qmaster was already configured by this very script.
    if [[ ! -r $CONFIG_STAMP || $(<"$CONFIG_STAMP") != "$(config_stamp)" ]]; then
        configure_sge
        config_stamp >"$CONFIG_STAMP"
    fi
    start_execd
    wait_queue_ready
    if ((CHANGED)); then
        run_test_job
    fi
    log "SGE up (qmaster pid $(read_pid "$QMASTER_PIDFILE"), execd pid $(read_pid "$EXECD_PIDFILE"), queue $QUEUE@$HOST, $((SECONDS - t0)) s)"
}

cmd_stop() {
    require_root
    stop_daemons
    log "SGE stopped"
}

cmd_status() {
    local ok=0 name pidfile
    for name in sge_qmaster sge_execd; do
        pidfile=$QMASTER_PIDFILE
        [[ $name == sge_execd ]] && pidfile=$EXECD_PIDFILE
        if daemon_running "$pidfile" "$name"; then
            echo "$name: running, pid $(read_pid "$pidfile")"
        else
            echo "$name: not running"
            ok=3
        fi
    done
    if ((ok == 0)); then
        qstat -f -u '*' || ok=3
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
