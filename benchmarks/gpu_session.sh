#!/usr/bin/env bash
# Everything that only a GPU can show, in one call on a GPU machine (run from the repository root):
# the CUDA tests, then the train-step, PGD, concurrency and whole-paper cost benchmarks.
#   bash benchmarks/gpu_session.sh [tests|train|features|profile|autotune|pgd|concurrency|concurrency_teachers|mps|cost ...]
#   (default: tests train pgd concurrency concurrency_teachers features cost)
# Under a 10-minute limit per command, run it as four calls: `tests`; `train` (6 step kinds, each
# compiled, plus the reference and two ablations: ~6-8 min); `pgd concurrency`; `concurrency_teachers
# features` (five WRN-40-2 teachers side by side, whose gain the cost otherwise borrows from the KD
# step's; then the feature methods' step, which it otherwise counts at the KD step's rate).
# Append each call's records.jsonl to benchmarks/records/<gpu>-<date>.jsonl; the cost needs no GPU:
#   python -m benchmarks.cost --device cuda --from-records benchmarks/records/<gpu>-<date>.jsonl
# Records go to $OUT (default results/benchmarks) as records.jsonl, the full output to $OUT/gpu_session.log.
set -uo pipefail
OUT=${OUT:-results/benchmarks}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# Wheels carried for packages the machine lacks (torchattacks, for the PGD-vs-torchattacks test).
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
RECORDS=$OUT/records
mkdir -p "$RECORDS"
steps=${*:-tests train pgd concurrency concurrency_teachers features cost}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    for step in $steps; do
        echo "=== $step $(date +%T)"
        case $step in
            tests) timeout 240 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_cuda.py tests/test_teacher_logits.py \
                       tests/test_attacks.py::test_cuda_matches_cpu tests/test_train.py tests/test_losses.py tests/test_models.py ;;
            train) timeout 540 python3 -m benchmarks.train_step --device cuda --compile \
                       --roles teacher,teacher_dropout,student,kd,kd_fickle,kd_cached \
                       --ablation ${ABLATION:-no_compile,no_teacher_stream} --out-dir "$RECORDS" ;;
            features) timeout 200 python3 -m benchmarks.train_step --device cuda --compile --roles kd_features \
                          --no-reference --out-dir "$RECORDS" ;;
            pgd) timeout 120 python3 -m benchmarks.pgd --device cuda --n 10000 --out-dir "$RECORDS" ;;
            profile) timeout 120 python3 -m benchmarks.profile_step --steps 20 ;;
            autotune) timeout 240 python3 -m benchmarks.train_step --device cuda --roles kd --no-reference \
                          --ablation cudnn_benchmark,compile_cudnn_benchmark --out-dir "$RECORDS" ;;
            concurrency) timeout 240 python3 -m benchmarks.concurrency --device cuda --k 1,5 --mode threads --compile \
                             --out-dir "$RECORDS"
                         timeout 240 python3 -m benchmarks.concurrency --device cuda --k 1,5 --mode threads --compile \
                             --role kd_cached --out-dir "$RECORDS" ;;
            concurrency_teachers) timeout 300 python3 -m benchmarks.concurrency --device cuda --k 1,5 --mode threads \
                             --compile --role teacher --out-dir "$RECORDS" ;;
            mps) if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then
                     timeout 120 python3 -m benchmarks.concurrency --device cuda --k 1,2,4 --out-dir "$RECORDS"
                     echo quit | nvidia-cuda-mps-control
                 else echo "no MPS here"; fi ;;
            cost) timeout 60 python3 -m benchmarks.cost --device cuda --from-records --out-dir "$RECORDS" ;;
        esac
        echo "=== $step exit $? $(date +%T)"
    done
} 2>&1 | tee -a "$OUT/gpu_session.log"
python3 -c "import json,sys; [print(json.dumps(json.load(open(f)))) for f in sorted(sys.argv[1:])]" \
    "$RECORDS"/*.json > "$OUT/records.jsonl"
echo "records: $(wc -l < "$OUT/records.jsonl") in $OUT/records.jsonl"
