#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, to try the cluster path (profiles/slurm-local)
# without a cluster. Idempotent: a running cluster is left alone. Needs root (it writes
# /etc/slurm/slurm.conf and starts daemons); installs Debian's slurm-wlm and munge if missing.
#   scripts/slurm/up.sh          start (or confirm) the cluster; prints `sinfo`
#   scripts/slurm/down.sh        stop it
set -euo pipefail

CONF=/etc/slurm/slurm.conf
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm
MARK="# written by sublim scripts/slurm/up.sh"

die() { echo "slurm-up: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it writes $CONF and starts munged, slurmctld, slurmd)"

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    command -v apt-get >/dev/null || die "slurmctld/munged are missing and there is no apt-get; install slurm-wlm and munge by hand"
    echo "slurm-up: installing slurm-wlm and munge (apt)"
    export DEBIAN_FRONTEND=noninteractive
    timeout -s KILL 300 apt-get update -qq || die "apt-get update failed; is a package mirror reachable?"
    timeout -s KILL 600 apt-get install -y -qq slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
}

cluster_up() { timeout -s KILL 10 sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }

write_conf() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    # RealMemory above what slurmd measures drains the node, so leave the OS a margin.
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    mkdir -p /etc/slurm "$STATE" "$SPOOL" "$LOGS" /run/slurm
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; not touching a real cluster's config"
    fi
    cat >"$CONF" <<EOF
$MARK
ClusterName=sublim
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No accounting: sacct fails here, so the profile polls squeue instead (slurm-status-command).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Jobs stay visible to squeue for a while after they end, so the executor sees how they ended.
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
# Memory per CPU when a job names none, small enough that jobs share the node.
DefMemPerCPU=1000
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if pgrep -u munge -x munged >/dev/null; then return; fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    # --force: a container's /run may carry a stale socket from an earlier start.
    runuser -u munge -- /usr/sbin/munged --force
}

start_daemons() {
    pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
    pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
}

wait_idle() {
    for _ in $(seq 1 60); do
        if cluster_up; then sinfo; return; fi
        sleep 1
    done
    # a node registered as down after an unclean stop: bring it back once
    scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true
    sleep 2
    cluster_up && { sinfo; return; }
    echo "slurm-up: the node did not become idle; the last lines of the daemons' logs:" >&2
    tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
    exit 1
}

if cluster_up; then
    sinfo
    exit 0
fi
install_packages
write_conf
start_munge
start_daemons
wait_idle
