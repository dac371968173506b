#!/usr/bin/env bash
# Start a real single-node SLURM cluster (slurmctld + slurmd + munged) on this
# machine, for CI tests of `snakemake --profile slurm ...`.
#
#   sudo .ci/slurm/start.sh        # idempotent: safe to run again at any time
#   .ci/slurm/stop.sh              # stops the daemons this script started
#
# Tested on Debian 12 (bookworm): slurm-wlm 22.05.8, munge 0.5.15, no systemd as
# PID 1, no usable cgroups (hence proctrack/linuxproc + task/none).
# Must run as root. Needs network access to the Debian apt repositories only
# if slurm/munge are not installed yet.
#
# Environment knobs (all optional):
#   SLURM_CI_PARTITION   partition name (default: main; the cluster's default
#                        partition, which the profiles use: they set no
#                        slurm_partition)
#   SLURM_CI_TIMEOUT     seconds to wait for the node to become idle (default 90)
#   SLURM_CI_SKIP_APT=1  never call apt-get (fail if binaries are missing)
#   SLURM_CI_REALMEM     MB of memory to advertise for the node instead of the
#                        real amount (e.g. 65536 on a 16 GB runner so that rules
#                        with mem_mb=16000 can still be scheduled). Memory is not
#                        enforced on this cluster (no cgroups, no accounting),
#                        so this only changes SLURM's bookkeeping; it sets
#                        SlurmdParameters=config_overrides.
set -euo pipefail

PARTITION="${SLURM_CI_PARTITION:-main}"
TIMEOUT="${SLURM_CI_TIMEOUT:-90}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm-ci
MUNGE_RUN=/run/munge
MUNGE_KEY=/etc/munge/munge.key

log() { printf '[slurm-ci] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
    if [[ -f $f ]]; then
      printf '\n----- tail -n 40 %s -----\n' "$f" >&2
      tail -n 40 "$f" >&2 || true
    fi
  done
  exit 1
}
# alive PIDFILE NAME: the pid in PIDFILE is a running (non-zombie) process named NAME
alive() {
  local pid stat comm
  [[ -f $1 ]] || return 1
  pid=$(cat "$1" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  read -r stat comm < <(ps -o stat=,comm= -p "$pid" 2>/dev/null) || return 1
  [[ $stat != Z* && $comm == "$2" ]]
}

[[ $(id -u) -eq 0 ]] || die "must run as root"
T0=$(date +%s)

# --------------------------------------------------------------------------
# 1. packages (apt-get update only once, only if something is missing)
# --------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
  ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  [[ ${SLURM_CI_SKIP_APT:-0} == 1 ]] && die "slurm/munge not installed and SLURM_CI_SKIP_APT=1"
  log "installing slurm-wlm + munge via apt"
  export DEBIAN_FRONTEND=noninteractive
  # keep the package postinst scripts from trying to start services
  # (they would fail without a slurm.conf, and we start the daemons ourselves)
  policy_created=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge </dev/null
  [[ $policy_created == 1 ]] && rm -f /usr/sbin/policy-rc.d
fi
log "slurm version: $(slurmd -V)"

# --------------------------------------------------------------------------
# 2. host name must resolve (slurmd identifies its node by `hostname -s`)
# --------------------------------------------------------------------------
HOST=$(hostname -s)
if ! getent hosts "$HOST" >/dev/null; then
  log "adding $HOST to /etc/hosts"
  echo "127.0.0.1 $HOST" >>/etc/hosts
fi

# --------------------------------------------------------------------------
# 3. munge
# --------------------------------------------------------------------------
if [[ ! -s $MUNGE_KEY ]]; then
  log "creating munge key"
  install -d -o munge -g munge -m 0700 /etc/munge
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$MUNGE_KEY" --force
  else
    dd if=/dev/urandom bs=1 count=1024 of="$MUNGE_KEY" status=none
  fi
fi
chown munge:munge "$MUNGE_KEY"
chmod 0400 "$MUNGE_KEY"
install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  rm -f "$MUNGE_RUN/munged.pid" "$MUNGE_RUN/munge.socket.2" "$MUNGE_RUN/munge.socket.2.lock"
  runuser -u munge -- /usr/sbin/munged </dev/null
  for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.2
  done
  munge -n </dev/null | unmunge >/dev/null || die "munged does not work"
fi

# --------------------------------------------------------------------------
# 4. slurm.conf (node line = real hardware as reported by `slurmd -C`)
# --------------------------------------------------------------------------
NODE_HW=$(slurmd -C | head -n1)   # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
[[ $NODE_HW == NodeName=* ]] || die "unexpected 'slurmd -C' output: $NODE_HW"
NODE_NAME=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$NODE_HW")
NCPUS=$(sed -E 's/.* CPUs=([0-9]+).*/\1/' <<<"$NODE_HW")
REALMEM=$(sed -E 's/.* RealMemory=([0-9]+).*/\1/' <<<"$NODE_HW")
OVERRIDES=""
if [[ -n ${SLURM_CI_REALMEM:-} ]]; then
  [[ $SLURM_CI_REALMEM =~ ^[0-9]+$ ]] || die "SLURM_CI_REALMEM must be an integer (MB)"
  NODE_HW=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$SLURM_CI_REALMEM/" <<<"$NODE_HW")
  REALMEM=$SLURM_CI_REALMEM
  # let slurmd accept the configured (larger) values instead of draining the node
  OVERRIDES="SlurmdParameters=config_overrides"
fi

install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$RUN_DIR"
install -d -m 0700 "$STATE_DIR"
install -d -m 0755 "$SPOOL_DIR"

NEW_CONF=$(mktemp)
cat >"$NEW_CONF" <<EOF
# Written by .ci/slurm/start.sh -- single-node CI cluster, do not edit by hand.
ClusterName=ci
SlurmctldHost=${NODE_NAME}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no mail in CI (silences "Configured MailProg is invalid")
MailProg=/bin/true
SwitchType=switch/none
# no systemd/cgroups in containers: plain /proc based process tracking
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# no slurmdbd: no accounting; sacct therefore cannot report jobs, so the
# snakemake plugin must query squeue (.ci/slurm/profile/config.yaml), which
# needs finished jobs to stay visible in slurmctld for a long time (MinJobAge)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
# reject (instead of queueing forever) jobs that can never fit, e.g. a rule
# with more threads (--cpus-per-task) or mem_mb than this machine has
EnforcePartLimits=ALL
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SPOOL_DIR}
SlurmctldPidFile=${RUN_DIR}/slurmctld.pid
SlurmdPidFile=${RUN_DIR}/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
InactiveLimit=0
KillWait=5
Waittime=0
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
${OVERRIDES}
${NODE_HW} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

CONF_CHANGED=1
if [[ -f $CONF ]] && cmp -s "$NEW_CONF" "$CONF"; then CONF_CHANGED=0; fi
install -m 0644 "$NEW_CONF" "$CONF"
rm -f "$NEW_CONF"

# --------------------------------------------------------------------------
# 5. daemons (started directly; systemd is usually not PID 1 in CI containers)
# --------------------------------------------------------------------------
CTLD_PID=$RUN_DIR/slurmctld.pid
SLURMD_PID=$RUN_DIR/slurmd.pid
if [[ $CONF_CHANGED == 1 ]]; then
  for d in slurmd slurmctld; do
    p=$RUN_DIR/$d.pid
    if alive "$p" "$d"; then
      log "config changed: stopping $d (pid $(cat "$p"))"
      kill "$(cat "$p")" || true
      for _ in $(seq 50); do alive "$p" "$d" || break; sleep 0.2; done
    fi
  done
fi
if ! alive "$CTLD_PID" slurmctld; then
  log "starting slurmctld"
  rm -f "$CTLD_PID"
  /usr/sbin/slurmctld </dev/null || die "slurmctld failed to start"
fi
for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
scontrol ping >/dev/null 2>&1 || die "slurmctld does not answer 'scontrol ping'"
if ! alive "$SLURMD_PID" slurmd; then
  log "starting slurmd"
  rm -f "$SLURMD_PID"
  /usr/sbin/slurmd </dev/null || die "slurmd failed to start"
fi

# --------------------------------------------------------------------------
# 6. wait until the node is idle (or allocated/mixed by jobs of an earlier run)
# --------------------------------------------------------------------------
deadline=$(($(date +%s) + TIMEOUT))
while :; do
  state=$(sinfo -h -n "$NODE_NAME" -o '%t' 2>/dev/null | head -n1 || true)
  case "$state" in
    idle | mix | alloc) break ;;
    drain* | drng | down* | fail*)
      # e.g. left over from a previous run that was killed
      scontrol update NodeName="$NODE_NAME" State=RESUME >/dev/null 2>&1 || true
      ;;
  esac
  if (($(date +%s) > deadline)); then
    scontrol show node "$NODE_NAME" >&2 || true
    die "node $NODE_NAME not idle after ${TIMEOUT}s (state: '${state:-none}')"
  fi
  sleep 1
done
log "node $NODE_NAME is '$state' (CPUs=$NCPUS RealMemory=${REALMEM}MB partition=$PARTITION)"

# --------------------------------------------------------------------------
# 7. prove that jobs really run: interactive step + batch job
# --------------------------------------------------------------------------
out=$(timeout 60 srun -N1 -n1 --mem=100 -t 1 hostname </dev/null) || die "srun hostname failed"
log "srun -N1 hostname -> $out"
tmp=$(mktemp -d)
# shellcheck disable=SC2016  # expanded inside the job, not here
jid=$(cd "$tmp" && timeout 60 sbatch --parsable --wait --mem=100 -t 1 -o "$tmp/%j.out" \
  --wrap 'echo batch-ok on $(hostname) job $SLURM_JOB_ID' </dev/null) || die "sbatch --wait failed"
grep -q batch-ok "$tmp/$jid.out" || die "batch job $jid produced no output"
log "sbatch --wait -> $(cat "$tmp/$jid.out")"
rm -rf "$tmp"
sinfo >&2
log "SLURM cluster ready in $(($(date +%s) - T0))s"
