#!/usr/bin/env bash
# Stop the single-node CI cluster started by .ci/slurm/start.sh.
# Only the daemons recorded in the pid files are signalled. Idempotent.
#   .ci/slurm/stop.sh            # stop slurmd, slurmctld and munged
#   .ci/slurm/stop.sh --purge    # additionally drop slurmctld state (job ids restart at 1)
set -euo pipefail

RUN_DIR=/run/slurm-ci
stop_pidfile() {
  local name=$1 pidfile=$2 pid
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile" 2>/dev/null || true)
  # only signal the pid if it still is the daemon (pid files may be stale)
  if [[ $pid =~ ^[0-9]+$ ]] && [[ $(ps -o comm= -p "$pid" 2>/dev/null) == "$name" ]]; then
    echo "[slurm-ci] stopping $name (pid $pid)" >&2
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

if command -v scontrol >/dev/null && scontrol ping >/dev/null 2>&1; then
  # cancel leftover jobs so that no job keeps running without its daemons
  scancel --state=PENDING,RUNNING --full --quiet "--user=$(id -un)" 2>/dev/null || true
fi
stop_pidfile slurmd "$RUN_DIR/slurmd.pid"
stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid"
stop_pidfile munged /run/munge/munged.pid
if [[ ${1:-} == --purge ]]; then
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
fi
echo "[slurm-ci] stopped" >&2
