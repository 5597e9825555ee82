#!/usr/bin/env bash
# GPU figures on one H200 (issue 18): runs `python -m benchmarks.gpu_suite --out $OUT/gpu` under the XLA flags
# below. Installs nothing. Results: $OUT/gpu/{correctness,attention,conv,train}.jsonl, summary.json and run.log
# (6 files, one folder down: inside the device tool's limits of 8 files, 2 folders). Extra arguments go to the
# suite (e.g. `bash benchmarks/gpu_suite.sh --sections train --remat dots`); see `python -m benchmarks.gpu_suite -h`.
#
# ---- the device command (a future session whose task is lent a machine; from the repo root) -------------------
# 1. Here, once (not on the device: it reaches no registry): the five packages the suite imports that the device
#    image lacks (KINDS.md's package list has jax 0.11.2 + jax-cuda13-plugin/pjrt, flax, optax, orbax-checkpoint,
#    absl-py, etils, tensorstore ... but not these), as CPython 3.12 x86-64 wheels, 5.2 MB in all, into .whl/
#    (already in .gitignore, so it travels only when carried):
#      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#        grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0 pypinyin==0.55.0 portpicker==1.6.0
#    (grain, array-record: shared.data.pipeline, imported by unitalking_jax.task; ml-collections: configs and
#    shared.train; pypinyin: configs/unitalking/tiny.py; portpicker: grain. Only section 4 needs them: without the
#    wheels sections 1-3 still run and train.jsonl records the ModuleNotFoundError.)
# 2. The device tool's run, timeout_s 540 (the suite's budget is 420 s; the rest is start-up and slack):
#      run(command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; bash benchmarks/gpu_suite.sh",
#          carry=[".whl"], timeout_s=540)
#    then give_back unless rerunning at once. Its files come back under the reply's files_at (gpu/...).
#
# JAX with CUDA: the device image already has it (python3 = /opt/torch/.venv/bin/python3: jax, jaxlib,
# jax-cuda13-plugin and -pjrt 0.11.2, cuDNN 9 for CUDA 13; KINDS.md, 2026-11). `pip install -e '.[cuda]'`
# (jax[cuda13]) is what a machine WITH a registry would need when JAX has no CUDA; the device machine reaches
# no registry, and JAX's CUDA wheels (the plugin plus nvidia-* libraries, hundreds of MB) exceed the tool's 64 MiB
# carry limit, so on it use the image's JAX as is (the project code was written against jax 0.10.2 here; 0.11.2
# there has not been tried). The check below stops with one line if the image's JAX sees no GPU.
#
# CPU dry run (every path at tiny sizes; Pallas in interpret mode; timings meaningless, every record says so):
#   PYTHON=.venv/bin/python OUT=/tmp/gs bash benchmarks/gpu_suite.sh --dry-run
#
# ---- XLA flags (each one's reason) --------------------------------------------------------------------------------
#   --xla_gpu_enable_latency_hiding_scheduler=true
#       schedules asynchronous work (collectives; the host<->device copies of the offload_residual remat policy)
#       to overlap compute: what NVIDIA's JAX images set by default; on one GPU it changes little and is kept so
#       figures stay comparable with multi-GPU runs of the same step.
# Environment:
#   XLA_PYTHON_CLIENT_MEM_FRACTION=0.92  the allocator takes 92 % of the GPU up front (default 75 %), leaving
#       ~11 GB for cuBLAS / cuDNN workspaces and Triton; the train section sizes its batch to 85 % of that limit.
#   TF_CPP_MIN_LOG_LEVEL=1  XLA's warnings and errors (slow compiles, fallbacks) stay; INFO lines go.
#   PYTHONUNBUFFERED=1      progress lines reach the tool's output tail as they happen.
# GPU_SUITE_XLA_FLAGS appends flags for an experiment. A flag this jaxlib does not know aborts XLA at start-up,
# so the flags are probed first (a CPU-only JAX start, ~2 s) and unknown ones dropped, with a line saying so.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-/tmp/gpu_suite}/gpu"
mkdir -p "$OUT_DIR"

FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true ${GPU_SUITE_XLA_FLAGS:-}"
probe=$(XLA_FLAGS="$FLAGS ${XLA_FLAGS:-}" JAX_PLATFORMS=cpu "$PY" -c "import jax; jax.devices()" 2>&1 >/dev/null)
if [[ "$probe" == *"Unknown flags in XLA_FLAGS:"* ]]; then
  bad=$(sed -n 's/.*Unknown flags in XLA_FLAGS: //p' <<<"$probe" | head -1)
  echo "gpu_suite.sh: this jaxlib does not know: $bad (dropped)"
  for f in $bad; do FLAGS=$(tr ' ' '\n' <<<"$FLAGS" | grep -vxF -- "$f" | tr '\n' ' '); done
fi
export XLA_FLAGS="$(echo $FLAGS ${XLA_FLAGS:-})"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
export PYTHONUNBUFFERED=1

dry=0
for a in "$@"; do [[ "$a" == "--dry-run" ]] && dry=1; done
if [[ $dry == 0 ]]; then
  "$PY" -c "import jax, sys; b = jax.default_backend(); print('gpu_suite.sh:', sys.executable, 'jax', jax.__version__,
b, [d.device_kind for d in jax.devices()]); sys.exit(0 if b == 'gpu' else 3)" \
    || { echo "gpu_suite.sh: error: JAX here has no GPU backend (JAX with CUDA: see this file's header)"; exit 2; }
fi
missing=$("$PY" -c "
import importlib.util as u
print(' '.join(m for m in ('ml_collections', 'grain', 'array_record', 'pypinyin', 'portpicker') if u.find_spec(m) is None))")
[[ -n "$missing" ]] && echo "gpu_suite.sh: warning: not importable: $missing (section train will record the error; see the header: carry .whl)"

echo "gpu_suite.sh: XLA_FLAGS=$XLA_FLAGS XLA_PYTHON_CLIENT_MEM_FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION out=$OUT_DIR"
"$PY" -m benchmarks.gpu_suite --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/run.log"
exit "${PIPESTATUS[0]}"
