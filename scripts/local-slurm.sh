#!/usr/bin/env bash
# local-slurm.sh — a real one-node SLURM cluster (Debian slurm-wlm 22.05 + munge) for tests and demos.
#
# Usage:  bash scripts/local-slurm.sh {start|stop|status}
#
#   start   install slurm-wlm and munge with apt-get when missing, write the munge key, start munged,
#           write /etc/slurm/slurm.conf and cgroup.conf for this host, start slurmctld and slurmd and
#           wait (bounded) until the node is usable. Idempotent: when the daemons already run with
#           the same configuration it only checks the node; a changed configuration is rewritten
#           and the daemons are restarted.
#   status  exit 0 only if sinfo answers, the node is idle/mixed/allocated/completing/planned and
#           (on this host) slurmd runs; prints the node state.
#   stop    stop slurmd, slurmctld and munged (by their pid files).
#
# Needs root; works without systemd (the daemons daemonize themselves, started in their own
# session with setsid so they outlive the shell that ran this script).
#
# Environment (optional):
#   LOCAL_SLURM_CPUS          CPUs the node advertises (default: 4 x nproc, see "Oversubscription")
#   LOCAL_SLURM_START_TIMEOUT seconds to wait for the node to become usable (default 60)
#
# Choices (all for a single test machine, not for production):
# - Oversubscription: the node advertises LOCAL_SLURM_CPUS (default 4 x nproc) CPUs and
#   SlurmdParameters=config_overrides stops slurmd from draining the node for "Low CPUs".
#   On the 2-core CI machine a 2-task job can then run next to other small test jobs instead of
#   queueing behind them. Do not read performance into CPU counts on this cluster.
# - Memory is not a consumable resource (CR_Core): with CR_Core_Memory and no DefMemPerCPU a job
#   that omits --mem is given the whole node's memory and such jobs run one at a time.
#   --mem requests are still checked against RealMemory (about 95% of MemTotal).
# - Requeue latency: a requeued job is held for cred_expire + 1 s (default 120 s) and then waits
#   for the next scheduling pass (sched_interval, default 60 s): about 160 s on stock 22.05.
#   AuthInfo=cred_expire=10 and sched_interval=2 bring that to seconds; KillWait=5 shortens the
#   SIGTERM->SIGKILL grace (submitit ignores SIGTERM, so a requeued or cancelled submitit job
#   always waits KillWait).
# - No accounting (no slurmdbd): sacct has no data; use squeue / scontrol show job. Finished
#   jobs stay visible to scontrol for MinJobAge=600 s.
set -euo pipefail

readonly SLURM_CONF=/etc/slurm/slurm.conf
readonly CGROUP_CONF=/etc/slurm/cgroup.conf
readonly MUNGE_KEY=/etc/munge/munge.key
readonly MUNGE_PID=/run/munge/munged.pid
readonly CTLD_PID=/run/slurmctld.pid
readonly SLURMD_PID=/run/slurmd.pid
readonly LOG_DIR=/var/log/slurm
readonly START_TIMEOUT=${LOCAL_SLURM_START_TIMEOUT:-60}

NODE=$(hostname -s)
readonly NODE

log() { echo "local-slurm: $*"; }
die() {
    echo "local-slurm: ERROR: $*" >&2
    exit 1
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (installs packages and writes /etc/slurm)"
}

# pid_alive PIDFILE NAME: true when PIDFILE names a live process whose command is NAME.
pid_alive() {
    local pidfile=$1 name=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$name" ]]
}

# stop_pid PIDFILE NAME: SIGTERM the daemon, wait up to 15 s, then SIGKILL.
stop_pid() {
    local pidfile=$1 name=$2 pid i
    pid_alive "$pidfile" "$name" || return 0
    pid=$(<"$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        pid_alive "$pidfile" "$name" || return 0
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM for 15 s: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

install_packages() {
    local cmd missing=0
    for cmd in slurmctld slurmd sinfo scontrol sbatch srun munged munge unmunge; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    [[ $missing -eq 0 ]] && return 0
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null ||
        die "apt-get install slurm-wlm munge failed"
    for cmd in slurmctld slurmd sinfo scontrol sbatch srun munged munge unmunge; do
        command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after apt-get install"
    done
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    id munge >/dev/null 2>&1 || die "user 'munge' missing (the munge package creates it)"
    if [[ ! -s $MUNGE_KEY ]]; then
        log "writing $MUNGE_KEY"
        mkdir -p /etc/munge
        (umask 077 && head -c 1024 /dev/urandom >"$MUNGE_KEY")
    fi
    chown munge:munge /etc/munge "$MUNGE_KEY"
    chmod 700 /etc/munge
    chmod 400 "$MUNGE_KEY"
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    if pid_alive "$MUNGE_PID" munged && munge_works; then
        return 0
    fi
    stop_pid "$MUNGE_PID" munged
    log "starting munged"
    setsid runuser -u munge -- /usr/sbin/munged --force </dev/null >/dev/null 2>&1 ||
        die "munged failed to start (see /var/log/munge/munged.log)"
    local i
    for ((i = 0; i < 100; i++)); do
        munge_works && return 0
        sleep 0.1
    done
    die "munge -n | unmunge still fails 10 s after starting munged (see /var/log/munge/munged.log)"
}

# Node memory for slurm.conf: about 95% of MemTotal in MB (slurmd must see at least this much).
real_memory_mb() {
    local total
    total=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    echo $((total * 95 / 100))
}

# render_slurm_conf CPUS: the slurm.conf text for this host on stdout.
render_slurm_conf() {
    local cpus=$1
    cat <<EOF
# Written by scripts/local-slurm.sh for a single-node test cluster; rewritten on every start.
ClusterName=mhdsr-local
SlurmctldHost=${NODE}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Requeued jobs are held cred_expire + 1 s before they may start again (default 120 s).
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
InactiveLimit=0
Waittime=0
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
NodeName=${NODE} CPUs=${cpus} RealMemory=$(real_memory_mb) State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
}

render_cgroup_conf() {
    # 22.05 refuses CgroupPlugin=disabled (slurmd then never starts); v1 works without systemd.
    cat <<'EOF'
# Written by scripts/local-slurm.sh
CgroupPlugin=cgroup/v1
CgroupAutomount=no
EOF
}

# write_if_changed FILE CONTENT: returns 0 when FILE was (re)written, 1 when unchanged.
write_if_changed() {
    local file=$1 content=$2
    if [[ -f $file ]] && [[ $(<"$file") == "$content" ]]; then
        return 1
    fi
    mkdir -p "$(dirname "$file")"
    printf '%s\n' "$content" >"$file.tmp.$$"
    chmod 644 "$file.tmp.$$"
    mv -f "$file.tmp.$$" "$file"
    return 0
}

# Client calls are wrapped in timeout: without a controller they retry for ~10 s.
slurmd_up() { timeout 10 scontrol show slurmd >/dev/null 2>&1; }
ctld_up() { timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { timeout 15 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }

wait_for_node() {
    local deadline=$((SECONDS + START_TIMEOUT)) state="" resumed=0
    while ((SECONDS < deadline)); do
        state=$(node_state || true)
        case $state in
            idle | mixed | allocated | completing | planned)
                log "node $NODE is $state"
                return 0
                ;;
            down | drained | draining | drain | fail | failing)
                if ((resumed < 3)); then
                    log "node $NODE is $state: resuming it"
                    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                    resumed=$((resumed + 1))
                fi
                ;;
        esac
        sleep 0.5
    done
    echo "local-slurm: ERROR: node $NODE not usable after ${START_TIMEOUT}s (state: '${state:-no answer}')" >&2
    sinfo -R 2>&1 | sed 's/^/  sinfo -R: /' >&2 || true
    tail -n 15 "$LOG_DIR/slurmctld.log" 2>/dev/null | sed 's/^/  slurmctld.log: /' >&2 || true
    tail -n 15 "$LOG_DIR/slurmd.log" 2>/dev/null | sed 's/^/  slurmd.log: /' >&2 || true
    exit 1
}

cmd_start() {
    local t0=$SECONDS changed=0 deadline conf cpus=${LOCAL_SLURM_CPUS:-$(($(nproc) * 4))}
    [[ $cpus =~ ^[1-9][0-9]*$ ]] || die "LOCAL_SLURM_CPUS must be a positive integer, got '$cpus'"
    [[ $START_TIMEOUT =~ ^[1-9][0-9]*$ ]] ||
        die "LOCAL_SLURM_START_TIMEOUT must be a positive integer, got '$START_TIMEOUT'"
    require_root
    install_packages
    start_munge
    mkdir -p "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
    conf=$(render_slurm_conf "$cpus") || die "could not render slurm.conf"
    write_if_changed "$SLURM_CONF" "$conf" && changed=1
    write_if_changed "$CGROUP_CONF" "$(render_cgroup_conf)" && changed=1
    if ((changed)); then
        log "configuration written: restarting slurm daemons"
        stop_pid "$SLURMD_PID" slurmd
        stop_pid "$CTLD_PID" slurmctld
    fi
    if ! pid_alive "$CTLD_PID" slurmctld; then
        log "starting slurmctld"
        setsid slurmctld </dev/null >/dev/null 2>&1 || die "slurmctld failed to start (see $LOG_DIR/slurmctld.log)"
    fi
    deadline=$((SECONDS + 20))
    until ctld_up; do
        if ((SECONDS >= deadline)); then
            tail -n 15 "$LOG_DIR/slurmctld.log" 2>/dev/null | sed 's/^/  slurmctld.log: /' >&2 || true
            die "slurmctld does not answer 20 s after start (see $LOG_DIR/slurmctld.log)"
        fi
        sleep 0.2
    done
    if ! pid_alive "$SLURMD_PID" slurmd; then
        log "starting slurmd"
        setsid slurmd </dev/null >/dev/null 2>&1 || die "slurmd failed to start (see $LOG_DIR/slurmd.log)"
    fi
    wait_for_node
    # slurmctld only notices a dead slurmd after SlurmdTimeout (300 s): ask slurmd itself too.
    slurmd_up || die "slurmd does not answer (see $LOG_DIR/slurmd.log)"
    pid_alive "$CTLD_PID" slurmctld || die "slurmctld is not running (see $LOG_DIR/slurmctld.log)"
    log "ready in $((SECONDS - t0)) s ($(sinfo --version))"
}

cmd_status() {
    local state
    if ! command -v sinfo >/dev/null 2>&1; then
        echo "not installed (no sinfo)"
        return 1
    fi
    state=$(node_state || true)
    echo "node ${NODE}: ${state:-no answer from slurmctld}"
    # A dead slurmd is only noticed by slurmctld after SlurmdTimeout (300 s): ask slurmd itself.
    if ! slurmd_up; then
        echo "slurmd on ${NODE} does not answer"
        return 1
    fi
    case $state in
        idle | mixed | allocated | completing | planned) return 0 ;;
        *) return 1 ;;
    esac
}

cmd_stop() {
    require_root
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$CTLD_PID" slurmctld
    stop_pid "$MUNGE_PID" munged
    log "stopped"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 {start|stop|status}" >&2
        exit 2
        ;;
esac
