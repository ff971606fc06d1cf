#!/usr/bin/env bash
# Stop the local single-node SLURM cluster that scripts/slurm/up.sh started (by pid file, so
# nothing else of the same name is touched). munged is left running: other tools may use it.
set -uo pipefail
for name in slurmd slurmctld; do
    pidfile=/run/slurm/$name.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
done
echo "slurm-down: stopped slurmd and slurmctld"
