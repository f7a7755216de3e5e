#!/usr/bin/env bash
# The accelerator check: about 5 minutes on one GPU, in a Python environment where JAX sees
# the GPU (jax[cuda12] installed) and jaxreg is installed with its test and bench extras.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Runs the core tests on the GPU, the lecture (its figures and timings), the many-model
# benchmark (M = 512 and 4096, vmap on the accelerator), the million-row benchmark (plain
# JAX, the estimator) and the data-parallel benchmark, each under its own time limit, and
# prints one table of what passed and how long it took. Every step's output is kept in
# OUT_DIR (default: gpu-check/). float32 matmuls run at JAX's default precision (TF32 on
# Ampere and newer GPUs); JAX_DEFAULT_MATMUL_PRECISION=highest gives full float32.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-check}
PY=${PYTHON:-python}
mkdir -p "$OUT"

if ! $PY -c "import jax, sys; d = jax.devices(); print(d); sys.exit(d[0].platform != 'gpu')" \
    >"$OUT/devices.txt" 2>&1; then
  echo "gpu_check: JAX sees no GPU here ($(tail -n 1 "$OUT/devices.txt"))" >&2
  exit 2
fi

ROWS=()
step() {  # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local status=ok
  if [ $rc -eq 124 ]; then status="timed out after ${limit}s"; elif [ $rc -ne 0 ]; then status="failed ($rc)"; fi
  ROWS+=("| $name | $status | $((SECONDS - t0)) s | $(tail -n 1 "$OUT/$name.log" | cut -c1-90) |")
}

step core-tests 120 $PY -m pytest -q -p no:cacheprovider tests/test_model.py \
  tests/test_loss_optim.py tests/test_engine.py tests/test_train.py tests/test_padding.py
step lecture 60 $PY -m jaxreg lecture --out "$OUT/lecture"
step many-models 90 $PY benchmarks/bench_many.py --models 512 4096 --repeats 1 --no-cli \
  --json "$OUT/many.json"
step million-rows 90 $PY benchmarks/bench_bigdata.py --only plain-host,plain-injit,estimator \
  --repeats 3 --out "$OUT/bigdata.md" --scratch "$OUT/scratch"
step data-parallel 60 $PY benchmarks/bench_scaleout.py --repeats 3 --out "$OUT/scaleout.md"

{
  echo "# gpu_check $(date -u +%Y-%m-%d) on $(head -n 1 "$OUT/devices.txt")"
  echo
  echo "| step | status | wall | last line |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/summary.md"
