#!/usr/bin/env bash
# One GPU check of cxr-bench, in under 8 minutes on one GPU:
#   1. the CUDA tests (pytest -m cuda tests/cuda): autocast, channels_last, compile, NCCL torchrun, kill/resume,
#      the GPU-resident loader against the CPU's batches;
#   2. the demo on the GPU (cxr-bench run --suite wang2017 --no-report), its wall time per run;
#   3. bench_models on CUDA for the four harness settings (the model alone, eager);
#   4. bench_train --preset cuda: harness images/s over the model alone, GPU busy share from NVML/nvidia-smi;
#   5. the same harness with torch.compile, as long as the time budget lasts (paper setting first);
#   then the paper profile's projected time per run from the measured rates.
# Everything lands in one folder, at most 8 files (what a device call brings back):
#   summary.csv (stage, status, seconds), gpu_check.log (machine, stage tails, projection), cuda_tests.xml,
#   models_cuda.csv, harness_overhead_cuda.csv, harness_overhead_cuda_compiled.csv, demo_runs.csv,
#   details.tar.gz (every stage's full log, the CSVs' sidecars with the machine, the demo's run files without
#   checkpoints).
#
# Usage: benchmarks/gpu_check.sh [OUT_DIR] [--cpu-smoke]
#   OUT_DIR       default: $OUT, else ./gpu_check_out
#   --cpu-smoke   the same stages shrunk to run on a CPU (32-px images, a phantom release, 1 step): checks the
#                 script end to end where there is no GPU (about 2 minutes on an idle 2-core machine)
# Environment: PYTHON (default .venv/bin/python if present, else python3), GPU_CHECK_BUDGET (seconds,
# default 460 on a GPU, 900 for the smoke run).
set -u -o pipefail

SMOKE=0
OUTDIR=""
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) SMOKE=1 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg" >&2; exit 2 ;;
    *) OUTDIR=$arg ;;
  esac
done
OUTDIR=${OUTDIR:-${OUT:-gpu_check_out}}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cxr-gpu-check.XXXXXX") || exit 2
mkdir -p "$WORK/logs"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CXR_BENCH_CACHE="$WORK/cache" CXR_BENCH_PROGRESS=log
cd "$ROOT" || exit 2

if [ "$SMOKE" = 1 ]; then BUDGET=${GPU_CHECK_BUDGET:-900}; else BUDGET=${GPU_CHECK_BUDGET:-460}; fi
START=$(date +%s)
END=$((START + BUDGET))
LOG="$OUTDIR/gpu_check.log"
SUMMARY="$OUTDIR/summary.csv"
: > "$LOG"
echo "stage,status,seconds,limit_s" > "$SUMMARY"

say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# stage NAME MAX_SECONDS COMMAND...: run with the smaller of MAX_SECONDS and the budget left (30 s kept for
# packing); its whole output goes to $WORK/logs/NAME.log, its tail to gpu_check.log, a row to summary.csv.
stage() {
  local name=$1 max=$2 left limit t0 rc dt status
  shift 2
  left=$((END - $(date +%s) - 30))
  limit=$((max < left ? max : left))
  if [ "$limit" -lt 15 ]; then
    say "== $name: skipped ($left s of the budget left)"
    echo "$name,skipped,0,$limit" >> "$SUMMARY"
    return 0
  fi
  say "== $name (at most ${limit} s): $*"
  t0=$(date +%s)
  timeout --kill-after=15 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
  rc=$?
  dt=$(($(date +%s) - t0))
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status="failed (exit $rc)" ;;
  esac
  echo "$name,$status,$dt,$limit" >> "$SUMMARY"
  { echo "---- $name: $status in ${dt} s; last lines:"; tail -n 40 "$WORK/logs/$name.log"; } >> "$LOG"
  say "== $name: $status in ${dt} s"
}

pack() {
  local rc=$?
  # The demo's per-run facts (wall time, loader, AUC) as one CSV; then everything else in one archive.
  "$PYTHON" - "$WORK/demo" "$OUTDIR/demo_runs.csv" >> "$LOG" 2>&1 <<'PYEOF' || true
import csv, json, sys
from pathlib import Path
store, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for manifest in sorted(store.glob("*/*/manifest.json")):
    m = json.loads(manifest.read_text())
    metrics_path = manifest.parent / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    rows.append({"run_id": m.get("run_id"), "name": m.get("name"), "status": m.get("status"),
                 "wall_seconds": m.get("wall_seconds"), "device": metrics.get("device"),
                 "loader": metrics.get("loader"), "train_images_per_s": metrics.get("train_images_per_s"),
                 "test_mean_auc": (metrics.get("test") or {}).get("mean_auc")})
with open(out, "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["run_id"])
    w.writeheader()
    w.writerows(rows)
done = [r for r in rows if r["status"] == "completed"]
print(f"demo: {len(done)}/{len(rows)} runs completed, sum of run wall times "
      f"{sum(float(r['wall_seconds'] or 0) for r in rows):.1f} s")
PYEOF
  # The CSVs' sidecars (machine and settings, <name>.csv.json) travel in the archive: the folder keeps 8 files.
  mkdir -p "$WORK/sidecars"
  for side in "$OUTDIR"/*.csv.json; do [ -e "$side" ] && mv "$side" "$WORK/sidecars/"; done
  tar -czf "$OUTDIR/details.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='cache' --exclude='phantom' \
    logs sidecars $( [ -d "$WORK/demo" ] && echo demo ) 2>> "$LOG" || true
  say "total $(($(date +%s) - START)) s; results in $OUTDIR: $(cd "$OUTDIR" && ls | tr '\n' ' ')"
  rm -rf "$WORK"
  exit $rc
}
trap pack EXIT

# ---------------------------------------------------------------------------------------------- machine
{
  echo "# gpu_check.sh ($([ "$SMOKE" = 1 ] && echo cpu-smoke || echo gpu)), $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${BUDGET} s"
  echo "# git: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null) dirty=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -c .)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/# gpu: /'
  "$PYTHON" -c "import platform, torch, torchvision, timm, numpy; print('# python', platform.python_version(), \
'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), \
'torchvision', torchvision.__version__, 'timm', timm.__version__, 'numpy', numpy.__version__, \
'gpus', torch.cuda.device_count()); print('# cpu cores', __import__('os').cpu_count())" 2>&1
  for pkg in papermill nbformat submitit tensorboard pynvml; do
    "$PYTHON" -c "import $pkg" 2>/dev/null && echo "# $pkg: present" || echo "# $pkg: absent"
  done
} >> "$LOG"

if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu
  "$PYTHON" -c "from cxr_bench.data.phantoms import make_phantom_release as m; \
m('$WORK/phantom', n_patients=30, images_per_patient=2, size=64, seed=0)" >> "$LOG" 2>&1 || exit 1
  DEMO_ARGS=(--data-root "$WORK/phantom" --profile sample --only '*-stem-*'
             --set optim.max_steps_per_epoch=1 --set eval.bootstrap=10)
  MODEL_SETTINGS="mobilenet_v1:gap:32:4,mobilenet_v1:wang2017:32:2:frozen"
  MODEL_ARGS=(--iters 1 --warmup 1)
  TRAIN_ARGS=(--tiny --steps 1 --repeats 1 --data-root "$WORK/phantom")
  HARNESS_ONLY=mobilenet_v1,resnet50-frozen
  COMPILE_ONLY=mobilenet_v1
else
  DEVICE=cuda
  DEMO_ARGS=()
  MODEL_SETTINGS="mobilenet_v1:gap:224:256,resnet50:gap:224:256,resnet50:wang2017:1024:16:frozen,densenet121:gap:224:16"
  MODEL_ARGS=(--iters 20 --warmup 5)
  TRAIN_ARGS=()
  HARNESS_ONLY=mobilenet_v1,resnet50-224,resnet50-frozen,densenet121
  # The paper profile's setting first: it decides the compile default.
  COMPILE_ONLY=resnet50-frozen-1024-paper,densenet121,mobilenet_v1,resnet50-224
fi

# ------------------------------------------------------------------------------------------------ stages
stage cuda_tests 180 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests/cuda \
  --junitxml="$OUTDIR/cuda_tests.xml" -o junit_family=xunit2

stage demo 150 "$PYTHON" -m cxr_bench run --suite wang2017 --runs "$WORK/demo" --no-report \
  --set device=$DEVICE ${DEMO_ARGS[@]+"${DEMO_ARGS[@]}"}

stage bench_models 90 "$PYTHON" benchmarks/bench_models.py --device $DEVICE --no-isolate --compile no \
  --settings "$MODEL_SETTINGS" ${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"} --out "$OUTDIR" --name models_cuda.csv

stage harness 180 "$PYTHON" benchmarks/bench_train.py --preset cuda --device $DEVICE --compile no \
  --only "$HARNESS_ONLY" --out "$OUTDIR" --name harness_overhead_cuda.csv --deadline $((END - 60)) ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}

stage harness_compiled 400 "$PYTHON" benchmarks/bench_train.py --preset cuda --device $DEVICE --compile yes \
  --only "$COMPILE_ONLY" --out "$OUTDIR" --name harness_overhead_cuda_compiled.csv --deadline $((END - 120)) \
  ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}

# ------------------------------------------------------------------------------------ paper projection
"$PYTHON" - "$OUTDIR" >> "$LOG" 2>&1 <<'PYEOF' || true
import sys
from pathlib import Path
import pandas as pd
out = Path(sys.argv[1])
# The official split of the full release, and each paper-profile block's epochs (cxr_bench/suites/wang2017.toml).
TRAIN, VAL, TEST = 78_146, 8_378, 25_596
PLAN = {"resnet50-frozen-1024-paper": (10, "one frozen 1024-px run (ResNet-50, Wang head)"),
        "densenet121-224-b16-chexnet": (20, "the CheXNet run (DenseNet-121, 224 px, at most 20 epochs)")}
print("---- projected wall time on this GPU from the measured harness rates (train + val each epoch, test once)")
for name in ("harness_overhead_cuda.csv", "harness_overhead_cuda_compiled.csv"):
    path = out / name
    if not path.is_file():
        continue
    df = pd.read_csv(path)
    print(df[["setting", "harness_images_per_s", "bare_images_per_s", "ratio", "gpu_busy_pct",
              "eval_images_per_s"]].to_string(index=False))
    for _, r in df.iterrows():
        base = r["setting"].removesuffix("-compiled")
        if base in PLAN:
            epochs, what = PLAN[base]
            per_epoch = TRAIN / r["harness_images_per_s"] + VAL / r["eval_images_per_s"]
            total = epochs * per_epoch + TEST / r["eval_images_per_s"]
            print(f"{r['setting']}: {per_epoch / 60:.1f} min per epoch, {total / 3600:.2f} h for {what}")
PYEOF
