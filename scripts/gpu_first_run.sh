#!/usr/bin/env bash
# The first run on a lent GPU machine, as one short command (docs/gpu.md):
#
#   scripts/gpu_wheels.sh                    # here, once: the wheels it lacks -> .gpu-wheels/
#   scripts/gpu_first_run.sh                 # there, with .gpu-wheels in the device call's carry
#   scripts/gpu_first_run.sh --only check    # there again: one part (or a comma-separated list)
#   scripts/gpu_first_run.sh --device cpu    # here: the same path on a CPU, small sizes
#
# Parts, in order, each under its own `timeout` (cut to what is left of the budget, BUDGET_S
# 420 s) and skipped, said so, where less is left than it takes (expected ~6 min on one H200):
#   install  pip install --no-index --no-deps --target $BPFREE_SITE the carried wheels
#            (pydantic and CodeCarbon with their missing dependencies; the machine has torch,
#            numpy, pyyaml, tqdm, scikit-learn, pynvml, psutil, pandas)               ~5 s
#   env      the GPU, driver, torch, CUDA, cuDNN, NVML, and where each package comes from ~10 s
#   check    scripts/gpu_check.py: counter period, matmul, every algorithm 10 s    ~3 min
#   train    `bpfree train` of every algorithm on digits, 5 epochs (short epochs: the
#            instantaneous-power path), bp with idle baseline and CodeCarbon         ~1 min
#   resume   scripts/gpu_resume_check.py: SIGTERM mid-epoch, exit 75, the same command
#            resumes (pieces 2), history against the uninterrupted run's           ~30 s
#   bench    python3 -m bpfree.bench --regime compute (fp32), the compute-bound case  1-2 min
#
# Everything goes to $BPFREE_WORK (default /tmp/bpfree-first-run); $OUT (the device runner's
# folder, at most 8 files come back; default ./gpu-first-run) gets first_run.log (all that
# was printed), first_run.json (each part's status and time, the env, the train and resume
# findings), gpu_check.json, bench_compute_fp32.json and work.tar.gz (the run folders).
# Exit status: 0 when every part that ran passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DEVICE=cuda
ONLY=install,env,check,train,resume,bench
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "gpu_first_run: unknown argument $1 (valid: --device cuda|cpu, --only PARTS)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cuda|cuda:*|cpu) ;; *) echo "gpu_first_run: --device $DEVICE: valid are cuda, cuda:N, cpu" >&2; exit 2 ;; esac
OUT=${OUT:-$REPO/gpu-first-run}
WORK=${BPFREE_WORK:-/tmp/bpfree-first-run}
SITE=${BPFREE_SITE:-/tmp/bpfree-site}
WHEELS=${BPFREE_WHEELS:-$REPO/.gpu-wheels}
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-420}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "$DEVICE" = cpu ]; then
    THREADS=1
    TRAIN_LIMIT=270  # five processes of 20-30 s each on 2 busy cores (torch's import and teardown)
    CHECK_ARGS=(--device cpu --seconds 0.2 --idle-seconds 0.1 --train-size 128 --eval-size 128 --algorithms bp,mf --budget-s 100)
    BENCH_ARGS=(--device cpu --quick --regime compute --threads 1)
else
    THREADS=8
    TRAIN_LIMIT=150
    CHECK_ARGS=(--device "$DEVICE" --seconds 10 --idle-seconds 3 --budget-s 220)
    BENCH_ARGS=(--device "$DEVICE" --regime compute --train-samples 10000 --test-samples 5000 --epochs 3 --repeats 2 --threads 8)
fi
START=$(date +%s)
: >"$WORK/parts.tsv"

wanted() { [[ ",$ONLY," == *",$1,"* ]]; }

# part NAME EXPECTED_S LIMIT_S COMMAND...: run it under its own timeout, LIMIT_S or what is left
# of the budget, whichever is less; skipped (and said so) where less than EXPECTED_S is left,
# unless it is the one part asked for (--only NAME). So the whole ends within BUDGET_S.
part() {
    local name=$1 expected=$2 limit=$3; shift 3
    wanted "$name" || return 0
    local now=$(( $(date +%s) - START ))
    local left=$(( BUDGET_S - now ))
    if [ "$left" -lt "$expected" ] && [ "$ONLY" != "$name" ]; then
        echo "=== $name: skipped ($now s in: $left s of the budget of $BUDGET_S s left, it takes ~$expected s)"
        printf '%s\tskipped\t0\t-\n' "$name" >>"$WORK/parts.tsv"
        return 0
    fi
    [ "$left" -lt "$limit" ] && [ "$ONLY" != "$name" ] && limit=$left
    echo "=== $name ($now s in; ~$expected s expected, timeout $limit s)"
    local t0=$(date +%s) rc
    timeout --kill-after=5 "$limit" "$@"
    rc=$?
    local took=$(( $(date +%s) - t0 ))
    local status=ok
    [ $rc -eq 0 ] || status=failed
    [ $rc -eq 124 ] && status=timeout
    echo "=== $name: $status (exit $rc) in $took s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$took" "$rc" >>"$WORK/parts.tsv"
}

install_wheels() {
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "no wheels in $WHEELS (scripts/gpu_wheels.sh makes them; name the folder in carry): using what is installed"
        return 0
    fi
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" "$WHEELS"/*.whl && echo "installed $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE"
}

# on a CPU, small architectures: the defaults (the paper's widths) take minutes there
small_arch() { case "$1" in cafo*) echo cnn:4,8,8 ;; *) echo mlp:32,32 ;; esac; }

train_all() {
    local algorithms rc=0
    algorithms=$("$PY" -c "import bpfree.algorithms; from bpfree.core.registry import ALGORITHMS; print(' '.join(ALGORITHMS.names()))") || return 1
    for a in $algorithms; do
        local extra=(--measure-idle-s 0 --measure-codecarbon off)
        [ "$a" = bp ] && extra=(--measure-idle-s 2 --measure-codecarbon on)
        [ "$DEVICE" = cpu ] && extra+=(--arch "$(small_arch "$a")")  # a GPU trains each default
        echo "--- bpfree train $a"
        rm -rf "$WORK/train/$a"  # a re-run trains again (a finished run folder would be kept as is)
        timeout 120 "$PY" -m bpfree train --algorithm "$a" --dataset digits --seed 1 --max-epochs 5 \
            --device "$DEVICE" --threads "$THREADS" "${extra[@]}" --out "$WORK/train/$a" || rc=1
    done
    return $rc
}

summary() {
    "$PY" - "$WORK" "$OUT" "$BUDGET_S" "$(( $(date +%s) - START ))" "$DEVICE" <<'EOF'
import csv
import json
import sys
from pathlib import Path

work, out, budget, wall, device = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
parts = [dict(zip(["part", "status", "seconds", "exit"], r)) for r in csv.reader(open(work / "parts.tsv"), delimiter="\t")]
report = {"device": device, "wall_s": wall, "budget_s": budget, "parts": parts}
if (work / "env.json").exists():
    report["env"] = json.loads((work / "env.json").read_text())
keep = [
    "status", "epochs", "test_accuracy", "train_time_s", "energy_j", "energy_source", "net_energy_j",
    "gpu_energy_counter_j", "gpu_energy_polled_j", "idle_power_w", "co2_kg", "codecarbon_error",
    "peak_memory_mb", "peak_device_used_mb", "precision_flags", "measurement_problems", "device",
]
runs = {}
for metrics in sorted((work / "train").glob("*/metrics.json")):
    record = json.loads(metrics.read_text())
    row = {k: record.get(k) for k in keep}
    with open(metrics.parent / "history.csv") as fh:
        sources = [r.get("energy_source") for r in csv.DictReader(fh)]
    row["epoch_energy_sources"] = {s: sources.count(s) for s in dict.fromkeys(sources)}
    row["counter_update_periods"] = (record.get("measurement") or {}).get("counter_update_periods")
    runs[metrics.parent.name] = row
report["train"] = runs
if (work / "resume.json").exists():
    report["resume"] = json.loads((work / "resume.json").read_text())
(out / "first_run.json").write_text(json.dumps(report, indent=2, default=str))
print(f"=== summary ({wall:.0f} s of {budget:.0f}):")
for p in parts:
    print(f"  {p['part']:<8} {p['status']:<8} {p['seconds']:>4} s")
for name, row in runs.items():
    print(
        f"  train {name:<10} {row['status']}, test accuracy {row['test_accuracy']}, {row['energy_j']} J "
        f"({row['energy_source']}), epochs by source {row['epoch_energy_sources']}"
    )
sys.exit(0 if all(p["status"] in ("ok", "skipped") for p in parts) else 1)
EOF
}

# the parts that are functions run under `timeout` in a child bash: it needs them and these
export -f install_wheels train_all small_arch
export DEVICE WORK SITE WHEELS PY THREADS

main() {
    echo "gpu_first_run on $DEVICE: $(date -u +%FT%TZ), commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'), parts $ONLY"
    part install 10 90 bash -c install_wheels
    part env 15 60 "$PY" scripts/gpu_env.py --site "$SITE" --out "$WORK/env.json"
    part check 170 260 "$PY" scripts/gpu_check.py "${CHECK_ARGS[@]}" --out "$WORK/check"
    [ -f "$WORK/check/gpu_check.json" ] && cp "$WORK/check/gpu_check.json" "$OUT/"
    part train 50 "$TRAIN_LIMIT" bash -c train_all
    local arch=()
    [ "$DEVICE" = cpu ] && arch=(--arch "$(small_arch mf)")
    part resume 25 120 "$PY" scripts/gpu_resume_check.py --device "$DEVICE" --threads "$THREADS" "${arch[@]}" \
        --work "$WORK/resume" --reference "$WORK/train/mf" --out "$WORK/resume.json"
    part bench 80 170 "$PY" -m bpfree.bench "${BENCH_ARGS[@]}" --out "$OUT/bench_compute_fp32.json"
    tar -czf "$OUT/work.tar.gz" -C "$WORK" --exclude='*.pt' . 2>/dev/null || true
    summary
}

main 2>&1 | tee "$OUT/first_run.log"
exit "${PIPESTATUS[0]}"
