#!/usr/bin/env bash
# One command for a fresh GPU machine: GPU JAX, the model tests on the GPU, train-step benchmarks
# of gmlp_s16 at 224x224 (bf16 and f32, the largest batch that fits) and of the paper's three
# models at 64x64, one epoch of CIFAR-100 if the data is there; every figure into one JSON file.
#
#   scripts/device_check.sh [OUT_DIR]        # OUT_DIR: default $OUT, else build/device_check
#   scripts/device_check.sh --quick [OUT_DIR] # seconds: a test subset and one tiny benchmark
#   scripts/device_check.sh --fetch-wheels    # here, with PyPI: wheels for a machine without it
#
# Writes OUT_DIR/device_check.json (rewritten after every stage, so a run cut off by a time limit
# still returns what it measured; "running" names the stage it was in, "complete" is true only
# at the end) and OUT_DIR/device_check.log (all output): two files, as a machine that returns only
# a few files from OUT needs. A stage that fails or runs out of time is recorded as
# {"error": ..., "rc": ..., "log_tail": [...]}, one that cannot run here as {"skipped": "why"};
# the next stage runs anyway.
#
# Every stage has its own time limit, cut to what is left of DEVICE_CHECK_BUDGET_S (default 540 s,
# for machines that stop a command after 10 minutes). On a CPU-only machine the same stages run
# with tiny settings (batch 8, one timed step, 2 % of CIFAR-100), so the script itself is tested
# there (tests/test_device_check.py runs --quick).
#
# A lent GPU machine may have no network and lack the project's data-side packages (the H200 image
# seen so far: JAX with CUDA, but no TensorFlow, TFDS, clu or ml_collections). So: pip installs are
# tried with short time-outs and a failure is recorded; wheels in build/device_wheels
# (--fetch-wheels, on a machine with PyPI; carry that folder) are installed without network; and
# TensorFlow, TFDS and clu, which the project imports at module level but the synthetic-data
# benchmarks and the model tests never call, are replaced by stand-in modules that fail when used
# (listed under install.stand_ins; the CIFAR stage, which needs them, is then skipped).
#
# Environment: PYTHON (interpreter; default .venv/bin/python, else python3), TFDS_DATA_DIR,
# DEVICE_CHECK_QUICK=1 (= --quick), DEVICE_CHECK_BUDGET_S, DEVICE_CHECK_S16_BATCHES (descending),
# DEVICE_CHECK_PAPER_BATCH, DEVICE_CHECK_CIFAR_MODEL (default cgmlp_2conv), DEVICE_CHECK_WHEELS,
# DEVICE_CHECK_STAND_INS=1 (use the stand-ins even where the real modules exist: tests the GPU
# image's path on a CPU machine), DEVICE_CHECK_SKIP="tests s16 paper cifar" (any of them: to run
# again only what an earlier run did not reach).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

quick=${DEVICE_CHECK_QUICK:-0}
fetch=0
out_arg=""
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    --fetch-wheels) fetch=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
    *) out_arg=$arg ;;
  esac
done

if [[ -n ${PYTHON:-} ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]] && .venv/bin/python -c "" 2>/dev/null; then PY=$ROOT/.venv/bin/python
else PY=$(command -v python3 || command -v python); fi
WHEELS=${DEVICE_CHECK_WHEELS:-build/device_wheels}

if (( fetch )); then
  # Pure-Python wheels that the GPU image lacks, for its Python 3.12; carried along with the tree.
  version=$("$PY" -c 'import importlib.metadata as m; print("==" + m.version("ml-collections"))' \
            2>/dev/null || true)
  mkdir -p "$WHEELS"
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux2014_x86_64 -d "$WHEELS" "ml-collections$version"
  echo "wheels in $WHEELS; carry that path to the device machine"
  exit 0
fi

OUT=${out_arg:-${OUT:-build/device_check}}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SUMMARY=$OUT/device_check.json
LOGFILE=$OUT/device_check.log
rm -f "$SUMMARY" "$LOGFILE"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
BUDGET=${DEVICE_CHECK_BUDGET_S:-540}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
# JAX takes 75 % of GPU memory by default; each benchmark runs alone, so let it have more.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}

say() { echo "$*" | tee -a "$LOGFILE"; }
H() { "$PY" "$ROOT/scripts/device_check.py" "$@"; }  # stdlib only: runs under any python
# Seconds a stage may take: its own limit, cut to the budget left less 15 s for the last writes.
cap() {
  local left=$(( BUDGET - SECONDS - 15 ))
  echo $(( $1 < left ? $1 : left ))
}
# run_stage NAME SECONDS CMD...: CMD under `timeout`, its output to the console, the log and
# $WORK/NAME.log; sets RC (124: out of time), WALL (s) and LOG. Never stops the script.
run_stage() {
  local name=$1 secs=$2 t0=$SECONDS
  shift 2
  LOG=$WORK/$name.log
  say "== $name (limit ${secs}s): $*"
  H set "$SUMMARY" "" --field running="$name"
  set +e
  timeout -k 10 "$secs" "$@" 2>&1 | tee -a "$LOG" "$LOGFILE"
  RC=${PIPESTATUS[0]}
  set -e
  WALL=$(( SECONDS - t0 ))
  say "== $name: exit $RC after ${WALL}s"
}
# record_failure KEY [--field K=V ...]: the failed stage's error, exit status and log tail.
record_failure() {
  local key=$1
  shift
  H set "$SUMMARY" "$key" --failure-log "$LOG" --field rc="$RC" --field wall_s="$WALL" "$@"
}
skipping() { [[ " ${DEVICE_CHECK_SKIP:-} " == *" $1 "* ]]; }
SKIPPED='{"skipped": "DEVICE_CHECK_SKIP"}'  # what a stage named in DEVICE_CHECK_SKIP records
json_list() { local IFS=,; echo "[$*]"; }
out_of_time() {
  H set "$SUMMARY" "$1" --field skipped="out of time (DEVICE_CHECK_BUDGET_S=$BUDGET)"
}

H set "$SUMMARY" "" --json "{\"schema\": 1, \"started\": \"$(date -u +%FT%TZ)\", \"quick\": $(
  (( quick )) && echo true || echo false), \"budget_s\": $BUDGET, \"complete\": false}"
say "device_check: python $PY, out $OUT, budget ${BUDGET}s$( (( quick )) && echo ', quick')"

# ---- 1. JAX for the GPU, the project's packages, stand-ins -------------------------------------
gpu=0 backend=none
timeout 30 nvidia-smi -L >/dev/null 2>&1 && gpu=1
(( gpu )) && backend=$(timeout 120 "$PY" -c 'import jax; print(jax.default_backend())' \
                       2>/dev/null || echo none)
if (( ! gpu )); then
  H set "$SUMMARY" install.jax_gpu --json '{"skipped": "no NVIDIA GPU (nvidia-smi)"}'
elif [[ $backend == gpu ]]; then
  H set "$SUMMARY" install.jax_gpu --field present='JAX already uses the GPU; nothing installed'
else
  # Short pip time-outs: a machine without network fails in seconds, not minutes.
  run_stage install_jax "$(cap 240)" "$PY" -m pip install -U --retries 1 --timeout 20 "jax[cuda12]"
  if (( RC == 0 )); then
    H set "$SUMMARY" install.jax_gpu --field installed='jax[cuda12]' --field wall_s="$WALL"
  else record_failure install.jax_gpu; fi
fi

SITE=$WORK/site
STANDINS=$WORK/stand_ins
mkdir -p "$SITE" "$STANDINS"
export PYTHONPATH="$ROOT:$SITE:$STANDINS${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  run_stage install_wheels "$(cap 120)" "$PY" -m pip install -q --no-index --no-deps --no-compile \
      --target "$SITE" "$WHEELS"/*.whl
  if (( RC == 0 )); then
    H set "$SUMMARY" install.wheels --field names="$(cd "$WHEELS" && echo *.whl)"
  else record_failure install.wheels; fi
fi

# What the benchmarks and the model tests import; pip names after the colon.
required=(jax:jax flax:flax optax:optax orbax.checkpoint:orbax-checkpoint
          ml_collections:ml-collections etils:etils absl:absl-py numpy:numpy
          scipy:scipy pytest:pytest)
missing=$(H missing "${required[@]%%:*}")
if [[ -n $missing ]]; then
  pips=()
  for entry in "${required[@]}"; do
    [[ " $missing " == *" ${entry%%:*} "* ]] && pips+=("${entry#*:}")
  done
  run_stage install_packages "$(cap 180)" "$PY" -m pip install --retries 1 --timeout 20 "${pips[@]}"
  if (( RC == 0 )); then H set "$SUMMARY" install.packages --json "{\"installed\": \"${pips[*]}\"}"
  else record_failure install.packages --field missing="${pips[*]}"; fi
fi

# Data-only modules: imported at module level, called only when a dataset is read or TensorBoard
# written. clu's metric writers import TensorFlow, so clu goes whenever TensorFlow is missing.
stand_ins=$(H missing tensorflow tensorflow_datasets clu)
[[ -n $stand_ins && " $stand_ins " != *" clu "* && " $stand_ins " == *" tensorflow "* ]] &&
  stand_ins="$stand_ins clu"
[[ ${DEVICE_CHECK_STAND_INS:-0} == 1 ]] && stand_ins="tensorflow tensorflow_datasets clu"
for module in $stand_ins; do
  file=$STANDINS/$module/__init__.py shown=$module
  [[ $module == clu ]] && { mkdir -p "$STANDINS/clu"; : >"$STANDINS/clu/__init__.py"
                            file=$STANDINS/clu/metric_writers.py shown=clu.metric_writers; }
  mkdir -p "$(dirname "$file")"
  cat >"$file" <<EOF
"""Stand-in written by scripts/device_check.sh: the real module is not installed here."""
def __getattr__(name):
  raise AttributeError(f"$shown is not installed; a stand-in (scripts/device_check.sh): {name}")
EOF
done
H set "$SUMMARY" install.stand_ins --json "$(printf '%s\n' $stand_ins |
    "$PY" -c 'import json, sys; print(json.dumps(sys.stdin.read().split()))')"

H set "$SUMMARY" "" --field running=environment
if env_json=$(timeout "$(cap 120)" "$PY" "$ROOT/scripts/device_check.py" env 2>>"$LOGFILE"); then
  H set "$SUMMARY" environment --json "$env_json"
else
  H set "$SUMMARY" environment --field backend=null \
      --field error='the environment probe failed or timed out'
fi
backend=$(H get "$SUMMARY" environment.backend)
say "backend: ${backend:-none}; stand-ins: ${stand_ins:-none}"
accel=0
[[ $backend == gpu || $backend == tpu ]] && accel=1

# ---- 2. The model tests, on the default device (the GPU where there is one) -------------------
# --noconftest: tests/conftest.py imports the trainer and its data code (TensorFlow, which the
# GPU image lacks) and sets 8 fake CPU devices; test_models.py needs none of its fixtures.
tests=(tests/test_models.py)
(( quick )) && tests+=(-k output_shapes_for_every_axis_pattern)
t=$(cap 180)
if skipping tests; then H set "$SUMMARY" tests --json "$SKIPPED"
elif (( t < 20 )); then out_of_time tests
else
  run_stage tests "$t" "$PY" -m pytest -q -p no:cacheprovider --noconftest \
      --junitxml="$WORK/tests.xml" "${tests[@]}"
  if [[ -s $WORK/tests.xml ]]; then  # exit 1 (tests failed) still has the counts
    H set "$SUMMARY" tests --json "$(H junit "$WORK/tests.xml")" --field rc="$RC" \
        --field wall_s="$WALL" --field selection="${tests[*]}"
  else record_failure tests --field selection="${tests[*]}"; fi
fi

# ---- 3. gmlp_s16 at 224x224, bf16 and f32, the largest batch that fits ------------------------
# bench KEY SECONDS ARGS...: one benchmark run; sets BENCH_OK, and BENCH_OOM when it ran out of
# device memory (then a smaller batch may fit; any other failure would fail at every batch).
bench() {
  local key=$1 secs=$2
  shift 2
  BENCH_OK=0 BENCH_OOM=0
  rm -f "$WORK/bench.json"
  run_stage "bench_${key//./_}" "$secs" "$PY" -m cgmlp_jax.tools.benchmark --out="$WORK/bench.json" "$@"
  if (( RC == 0 )) && [[ -s $WORK/bench.json ]]; then BENCH_OK=1
  elif grep -qE "RESOURCE_EXHAUSTED|[Oo]ut of memory" "$LOG"; then BENCH_OOM=1; fi
}

if (( accel )); then
  s16_batches=${DEVICE_CHECK_S16_BATCHES:-1024 512 256 128 64}; s16_timing=(--steps=10 --windows=3)
else  # CPU: only to exercise this path (~2 min per dtype on 2 cores, most of it compiling)
  s16_batches=${DEVICE_CHECK_S16_BATCHES:-8}; s16_timing=(--steps=1 --windows=1)
fi
for dtype in bfloat16 float32; do
  key=gmlp_s16_224.$dtype
  if skipping s16; then H set "$SUMMARY" "$key" --json "$SKIPPED"; continue; fi
  if (( quick )); then
    H set "$SUMMARY" "$key" \
        --field skipped='quick mode (gmlp_s16 at 224 compiles for minutes on a CPU)'
    continue
  fi
  batches=$s16_batches
  [[ $dtype == float32 ]] && batches=$(H f32-batches "$SUMMARY" $s16_batches)
  tried=()
  for batch in $batches; do
    t=$(cap 240)
    if (( t < 30 )); then out_of_time "$key"; continue 2; fi
    bench "$key" "$t" --config=configs/imagenet.py:variant=s16 --image_size=224 --num_classes=1000 \
        --config.batch_size="$batch" --config.eval_batch_size="$batch" --config.dtype="$dtype" \
        "${s16_timing[@]}"
    if (( BENCH_OK )); then
      H set "$SUMMARY" "$key" --file "$WORK/bench.json" --field wall_s="$WALL" \
          --field batch_sizes_out_of_memory="$(json_list "${tried[@]}")" \
          --field batch_sizes_considered="$(json_list $batches)"
      continue 2
    fi
    if (( ! BENCH_OOM )); then record_failure "$key" --field batch_size="$batch"; continue 2; fi
    tried+=("$batch")
  done
  record_failure "$key" --field batch_sizes_out_of_memory="$(json_list "${tried[@]}")"
done

# ---- 4. The paper's three models at 64x64 (CIFAR's 32x32 images resized on device, as in training)
if (( accel )); then
  paper=(--config.batch_size="${DEVICE_CHECK_PAPER_BATCH:-128}" --steps=20 --windows=3)
else
  paper=(--config.batch_size="${DEVICE_CHECK_PAPER_BATCH:-8}" --config.eval_batch_size=8
         --steps=1 --windows=1)
fi
for model in gmlp cgmlp_1conv cgmlp_2conv; do
  key=paper_64.$model
  if skipping paper; then H set "$SUMMARY" "$key" --json "$SKIPPED"; continue; fi
  if (( quick )) && [[ $model != gmlp ]]; then
    H set "$SUMMARY" "$key" --json '{"skipped": "quick mode (only gmlp is benchmarked)"}'
    continue
  fi
  t=$(cap 120)
  if (( t < 20 )); then out_of_time "$key"; continue; fi
  bench "$key" "$t" --config=configs/paper.py:model="$model" --image_size=32 --num_classes=100 \
      "${paper[@]}"
  if (( BENCH_OK )); then
    H set "$SUMMARY" "$key" --file "$WORK/bench.json" --field wall_s="$WALL" \
        --field stored_image_size=32
  else record_failure "$key"; fi
done

# ---- 5. One epoch of CIFAR-100 (launch.py, the paper recipe) if the data is here --------------
data_dir=""
for dir in "${TFDS_DATA_DIR:-}" shared/tfds ../shared/tfds; do
  if [[ -n $dir && -d $dir/cifar100 ]]; then data_dir=$(cd "$dir" && pwd); break; fi
done
cifar_model=${DEVICE_CHECK_CIFAR_MODEL:-cgmlp_2conv}
if (( accel )); then
  cifar_scope="one epoch: 90 % of train, validation on the other 10 %"
  cifar=(--config.log_every_steps=25)
else  # an epoch takes a CPU tens of minutes: 2 % of train (1,000 images) shows the path works
  cifar_scope="CPU: one epoch of train[:2%], validation on train[98%:]"
  cifar=(--config.train_split='train[:2%]' --config.validation_split='train[98%:]'
         --config.eval_batch_size=128 --config.log_every_steps=2)
fi
t=$(cap 300)
if skipping cifar; then H set "$SUMMARY" cifar100_epoch --json "$SKIPPED"
elif (( quick )); then H set "$SUMMARY" cifar100_epoch --json '{"skipped": "quick mode"}'
elif [[ -z $data_dir ]]; then
  H set "$SUMMARY" cifar100_epoch \
      --field skipped='no cifar100 in $TFDS_DATA_DIR, shared/tfds or ../shared/tfds'
elif [[ " $stand_ins " == *" tensorflow "* || " $stand_ins " == *" tensorflow_datasets "* ]]; then
  H set "$SUMMARY" cifar100_epoch \
      --field skipped='reading the data needs tensorflow and tensorflow_datasets (not installed)'
elif (( t < 60 )); then out_of_time cifar100_epoch
else
  run_stage cifar100_epoch "$t" "$PY" "$ROOT/launch.py" \
      --config=configs/paper.py:model="$cifar_model" --workdir="$WORK/cifar" \
      --config.num_epochs=1 --config.data_dir="$data_dir" --config.download=False "${cifar[@]}"
  if (( RC == 0 )); then
    H set "$SUMMARY" cifar100_epoch --json "$(H cifar "$WORK/cifar")" --field model="$cifar_model" \
        --field scope="$cifar_scope" --field data_dir="$data_dir" --field wall_s="$WALL"
  else record_failure cifar100_epoch --field model="$cifar_model" --field scope="$cifar_scope"; fi
fi

H set "$SUMMARY" "" --field running=null --field complete=true --field wall_s="$SECONDS" \
    --field finished="$(date -u +%FT%TZ)"
say "== summary ($SUMMARY)"
H brief "$SUMMARY" | tee -a "$LOGFILE" || true  # a summary of the summary: never fails the run
