#!/usr/bin/env bash
# The GPU checks of the CUDA kernels in one run on a GPU machine, most important first, each step under its
# own time limit, the whole run ending inside BUDGET_S seconds even when a step hangs.
#
#   bash tools/gpu/run_checks.sh [BUDGET_S [OUT_DIR]]      # from the repository root; defaults 480 and gpu-out
#
# Every kernel variant runs in turn: the default one for the card (on Hopper the cluster TTT-MLP kernel)
# and, forced by TTT_STUDIO_TTT_CUDA_VARIANT=sm80, the no-cluster TTT-MLP forward and backward of sm_80 /
# sm_86 / sm_89, which a Hopper card runs from the same source. Its results are judged against the cost model of
# docs/benchmarks.md ("TTT-MLP kernels: expected cost").
#
# Writes five files to OUT_DIR: summary.txt (one line per step: exit status, seconds, limit), checks.log
# (every step's output, headed by its command), kernel_bench.md and kernel_bench_sm80.md (the benchmark's
# tables, for docs/benchmarks.md) and env.txt. On a machine without CUDA the GPU tests skip and the
# benchmark fails: a dry run of the script itself.
set -u
BUDGET=${1:-480}
OUT=${2:-gpu-out}
mkdir -p "$OUT"
: > "$OUT/summary.txt"
: > "$OUT/checks.log"
START=$(date +%s)

# step NAME LIMIT_S COMMAND...: run COMMAND for at most LIMIT_S (less if the budget is nearly spent)
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    if [ "$left" -lt 20 ]; then
        echo "$name: not run (budget of ${BUDGET} s spent)" >> "$OUT/summary.txt"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    {
        echo
        echo "===== $name (limit ${limit} s): $*"
    } >> "$OUT/checks.log"
    local t0
    t0=$(date +%s)
    timeout --kill-after=5 "$limit" "$@" >> "$OUT/checks.log" 2>&1
    local rc=$?
    local verdict=ok
    [ "$rc" -ne 0 ] && verdict=FAILED
    [ "$rc" -eq 124 ] && verdict="TIMED OUT"
    echo "$name: $verdict (exit $rc) in $(($(date +%s) - t0)) s of ${limit} s" >> "$OUT/summary.txt"
}

PYTEST=(python3 -m pytest -q -rs -p no:cacheprovider)
SMOKE="B1-H1"  # the smallest case of every kernel test: batch 1, one head, 64 tokens

step env 30 bash -c 'nvidia-smi; python3 -c "import torch, cupy; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cupy\", cupy.__version__); print(torch.cuda.get_device_name() if torch.cuda.is_available() else \"no CUDA device\")"; which nvcc compute-sanitizer'
cp "$OUT/checks.log" "$OUT/env.txt"
NO_CLUSTER=(env TTT_STUDIO_TTT_CUDA_VARIANT=sm80)  # the sm_80 / sm_86 / sm_89 TTT-MLP forward and backward
step forward-smoke 90 "${PYTEST[@]}" -x tests/cuda/test_kernel_gpu.py -k "$SMOKE"
step forward-smoke-sm80 90 "${NO_CLUSTER[@]}" "${PYTEST[@]}" -x tests/cuda/test_kernel_gpu.py -k "mlp and $SMOKE"
step backward-smoke 90 "${PYTEST[@]}" -x tests/cuda/test_kernel_bwd_gpu.py -k "$SMOKE"
step backward-smoke-sm80 90 "${NO_CLUSTER[@]}" "${PYTEST[@]}" -x tests/cuda/test_kernel_bwd_gpu.py -k "mlp and $SMOKE"
step kernel-tests 150 "${PYTEST[@]}" tests/cuda/test_kernel_gpu.py tests/cuda/test_kernel_bwd_gpu.py tests/cuda/test_dispatch.py
step kernel-tests-sm80 150 "${NO_CLUSTER[@]}" "${PYTEST[@]}" tests/cuda/test_kernel_gpu.py tests/cuda/test_kernel_bwd_gpu.py -k mlp
step kernel-bench 120 bash -c "PYTHONUNBUFFERED=1 python3 -m ttt_engine.bench.kernel_bench --max-ref-tokens 0 --no-compile-ref > '$OUT/kernel_bench.md'"
step kernel-bench-sm80 90 "${NO_CLUSTER[@]}" bash -c "PYTHONUNBUFFERED=1 python3 -m ttt_engine.bench.kernel_bench --kinds mlp --lengths 8192,51456 --max-ref-tokens 0 --no-compile-ref --no-63s > '$OUT/kernel_bench_sm80.md'"
step memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 1 "${PYTEST[@]}" -x tests/cuda/test_kernel_gpu.py -k "$SMOKE"
step racecheck 60 compute-sanitizer --tool racecheck --error-exitcode 1 "${PYTEST[@]}" -x tests/cuda/test_kernel_gpu.py -k "mlp and $SMOKE"
step racecheck-sm80 60 "${NO_CLUSTER[@]}" compute-sanitizer --tool racecheck --error-exitcode 1 "${PYTEST[@]}" -x tests/cuda/test_kernel_gpu.py -k "mlp and $SMOKE"
step racecheck-bwd-sm80 90 "${NO_CLUSTER[@]}" compute-sanitizer --tool racecheck --error-exitcode 1 "${PYTEST[@]}" -x tests/cuda/test_kernel_bwd_gpu.py -k "mlp and $SMOKE"
# the pipeline and trainer tests need diffusers: on an offline machine install its wheel (CONTRIBUTING.md)
if python3 -c "import diffusers" 2> /dev/null; then
    step gpu-pipeline-train 120 "${PYTEST[@]}" tests/pipeline/test_video_pipeline.py tests/train/test_trainer.py -m "not slow"
else
    echo "gpu-pipeline-train: not run (diffusers is not installed; CONTRIBUTING.md)" >> "$OUT/summary.txt"
fi

echo "total: $(($(date +%s) - START)) s of ${BUDGET} s" >> "$OUT/summary.txt"
cat "$OUT/summary.txt"
