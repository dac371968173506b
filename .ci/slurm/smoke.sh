#!/usr/bin/env bash
# Smoke test of the repo's SLURM profile against the cluster of start.sh:
# runs .ci/slurm/smoke/Snakefile with `--profile slurm` (and the CI cluster's
# additions, .ci/slurm/profile, stacked on it) from a scratch dir that contains a
# `slurm -> <repo>/slurm` link (proves the relative profile lookup),
# checks that every job went through sbatch (SLURM job ids in the logs, known to
# slurmctld), and that a failing job (`exit 1`) makes snakemake fail.
#   .ci/slurm/start.sh && .ci/slurm/smoke.sh
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SNAKEMAKE=${SNAKEMAKE:-$REPO/.venv/bin/snakemake}
WORK=$(mktemp -d /tmp/slurm-smoke.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cp "$REPO/.ci/slurm/smoke/Snakefile" "$WORK/"
ln -s "$REPO/slurm" "$WORK/slurm"
cd "$WORK"
T0=$(date +%s)

PROFILES=(--profile slurm --profile "$REPO/.ci/slurm/profile")
"$SNAKEMAKE" "${PROFILES[@]}" all --config gpu=0 >run.log 2>&1 || { tail -50 run.log; exit 1; }
grep -q "Using profiles slurm and $REPO/.ci/slurm/profile" run.log
ids=$(grep -o 'submitted with SLURM jobid [0-9]*' run.log | awk '{print $5}')
[[ $(wc -w <<<"$ids") -eq 5 ]] || { echo "expected 5 SLURM jobs, got: $ids"; exit 1; }
for id in $ids; do
  f=$(find .snakemake/slurm_logs -name "$id.log")
  [[ -n $f ]] || { echo "no SLURM log for job $id"; exit 1; }
  scontrol show job "$id" | grep -q 'JobState=COMPLETED' || { echo "job $id not COMPLETED"; exit 1; }
done
grep -q "aggregate slurm_job=[0-9]" results/summary.txt
echo "[smoke] ok: 5 jobs via sbatch: $(tr "\n" " " <<<"$ids") ($(($(date +%s) - T0))s)"

T1=$(date +%s)
if "$SNAKEMAKE" "${PROFILES[@]}" --retries 0 results/fail.txt >fail.log 2>&1; then
  echo "[smoke] failing job was reported as success"; tail -30 fail.log; exit 1
fi
grep -q "SLURM status is: 'FAILED'" fail.log || { tail -30 fail.log; exit 1; }
echo "[smoke] ok: failing job reported as FAILED ($(($(date +%s) - T1))s)"
