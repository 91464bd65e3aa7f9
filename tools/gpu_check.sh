#!/usr/bin/env bash
# Everything our CUDA code must show on a GPU machine, in one run (the machine may be bare: no
# build tools, another Python, no network). Unpacks the bundle from tools/gpu_bundle.sh and runs,
# each step with its own time limit and log, going on past a failed step:
#   0. parity  the layers' CPU/GPU parity tests alone (seconds): if they fail, nothing else runs
#   0a. tiled  the tiled smoother's tiled-against-grid-wide test (bit for bit; outside the parity tests)
#   0b. direct the solve layer's GPU tests again with its CUDA graphs off (DMPN_CUDA_GRAPHS=0)
#   0c. tunings the parity tests again under each V-cycle tuning of GPU_MULTIGRID
#   1. bench   tools/bench_propagation.py --gpu: CUDA (direct launches, graphs, and graphs with
#              each GPU_MULTIGRID tuning) vs C++ CPU layer vs scipy splu, one process
#   1b. profile ncu's time per kernel (gpu__time_duration) over one 600 x 800 forward +
#              backward of the CUDA layer (direct launches; the V-cycle tuning PROFILE_MULTIGRID,
#              default "", the layer's), summed by kernel name into the summary
#              (bench_propagation.py --ncu-summary)
#   2. gtest   dmpn_test, all cases: GPU gradient checks and CPU/GPU parity of our four layers
#   3. time    `caffe time -gpu 0` of the paper-size deploy net at 608 x 800, per layer
#   4. train   `caffe train -gpu 0` of the paper-size net from the stock solver (max_iter cut to
#              TRAIN_ITERS) on composites make_lmdb.py generates there; loss and iterations/s
#   5. sanitize compute-sanitizer's memcheck over the layers' GPU parity tests and the tiled
#              smoother's, then its synccheck over the tiled smoother's test and racecheck over
#              its float case with a float64 hierarchy (slow: over 90 s on an H100) (if installed)
# Usage: bash tools/gpu_check.sh BUNDLE.tar.xz [OUT_DIR]   (OUT_DIR default: $OUT if set, else
# gpu-check/ in the repository). The whole run keeps within DEADLINE seconds (default 540, under
# a device call's 10 minutes): each step gets at most what is left, and steps that cannot start
# with 20 s left are skipped (said in the summary), so the summary and logs always come back.
# STEPS="parity tiled direct tunings bench profile gtest time train sanitize" picks steps; TRAIN_ITERS=300;
# GTEST_FILTER='*' narrows gtest; GPU_MULTIGRID="3,1.5,2048,tiled 2,1.5,2048" V-cycle tunings
# (SWEEPS[/BLOCK_SWEEPS],OMEGA,BLOCK_UNKNOWNS[,tiled[,MIN_TILES]][,float], the layer's
# DMPN_GPU_MULTIGRID) to check and time beside the layer's default (3,1.5,2048,tiled,N, N the
# GPU's multiprocessors; unset: $DEFAULT_TUNINGS below: the default with one or no sweep on the
# one-block levels, with a float32 hierarchy, and with both, none of them timed yet; "" none);
# CUDA_LIBS=dir[:dir] names where cuBLAS and cuRAND are instead of searching for them;
# DRY_RUN_CPU=1 runs the same steps in CPU mode (to check this script on a machine without a GPU).
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARBALL=${1:?usage: gpu_check.sh BUNDLE.tar.xz [OUT_DIR]}
RESULTS=${2:-${OUT:-$REPO/gpu-check}}
STEPS=${STEPS:-parity tiled direct tunings bench profile gtest time train sanitize}
DEFAULT_TUNINGS="3/1,1.5,2048,tiled,132 3/0,1.5,2048,tiled,132 3,1.5,2048,tiled,132,float 3/0,1.5,2048,tiled,132,float 3/1,1.5,2048,tiled,132,float"
read -r -a TUNINGS <<< "${GPU_MULTIGRID-$DEFAULT_TUNINGS}"
TRAIN_ITERS=${TRAIN_ITERS:-300}
DEADLINE=${DEADLINE:-540}
mkdir -p "$RESULTS" && RESULTS=$(cd "$RESULTS" && pwd)  # absolute: some steps run elsewhere
[[ -f $TARBALL ]] || { echo "gpu_check: no bundle at $TARBALL (make it with tools/gpu_bundle.sh)" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi -L | tee "$RESULTS/device.txt"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
tar -xJf "$TARBALL" -C "$WORK" || { echo "gpu_check: cannot unpack $TARBALL" >&2; exit 2; }
export DMPN_BUNDLE=$WORK/dmpn-gpu-bundle DMPN_REPO=$REPO
# cuBLAS and cuRAND of this machine (CUDA toolkit or NVIDIA's Python wheels), unless given.
CUDA_LIBS=${CUDA_LIBS:-}
[[ -z $CUDA_LIBS ]] && for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10; do
  hit=$(find /usr/local/cuda/ /usr/local/ /opt/ /usr/lib/ -name "$lib" 2>/dev/null | head -1)
  [[ -n $hit ]] || { echo "gpu_check: $lib not found on this machine" >&2; exit 2; }
  CUDA_LIBS=$CUDA_LIBS:$(dirname "$hit")
done
export CUDA_LIBS=${CUDA_LIBS#:}
# shellcheck disable=SC1091
source "$DMPN_BUNDLE/env.sh"
echo "CUDA libraries from: $CUDA_LIBS" | tee -a "$RESULTS/device.txt"
[[ -f $DMPN_BUNDLE/REVISION ]] && sed 's/^/bundle built from /' "$DMPN_BUNDLE/REVISION" | tee -a "$RESULTS/device.txt"
# what the CPU columns ran on (the C++ layer's threads: the CPUs this process may use)
quota=$(cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || echo none)
echo "CPUs: $(nproc) usable, $(getconf _NPROCESSORS_ONLN) online, cgroup CPU quota: $quota; $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  | tee -a "$RESULTS/device.txt"
# A tuning the layer would refuse must not cost the steps that follow: checked before any.
PROFILE_MULTIGRID=${PROFILE_MULTIGRID-}
CHECK_TUNINGS=(${TUNINGS[@]+"${TUNINGS[@]}"} ${PROFILE_MULTIGRID:+"$PROFILE_MULTIGRID"})
if ((${#CHECK_TUNINGS[@]})); then
  "$DMPN_PYTHON" -c 'import argparse, sys; sys.path.insert(0, sys.argv[1])
from dmpn.bench import gpu_multigrid_arg as check
try:
    [check(spec) for spec in sys.argv[2:]]
except argparse.ArgumentTypeError as e:
    sys.exit(f"gpu_check: GPU_MULTIGRID or PROFILE_MULTIGRID: {e}")' "$REPO" "${CHECK_TUNINGS[@]}" || exit 2
fi

DEV=(-gpu 0) BENCH_GPU=--gpu MODE=GPU
[[ ${DRY_RUN_CPU:-} == 1 ]] && DEV=() BENCH_GPU= MODE=CPU
SUMMARY=$RESULTS/summary.txt
LOGS=$WORK/logs  # packed into RESULTS/logs.tar.gz after each step (few files come back from a device)
mkdir -p "$LOGS"
: > "$SUMMARY"
step() {  # step NAME LIMIT_S COMMAND...: log to LOGS/NAME.log, one summary line
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - SECONDS - 15))
  if ((left < 20)); then
    echo "$name: skipped, ${left} s left of DEADLINE=$DEADLINE" | tee -a "$SUMMARY"
    return 124
  fi
  ((limit > left)) && limit=$left
  echo "=== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$SUMMARY"
  tail -n "${TAIL:-25}" "$LOGS/$name.log"
  tar -czf "$RESULTS/logs.tar.gz" -C "$LOGS" .
  return $rc
}
want() { [[ " $STEPS " == *" $1 "* ]]; }
gtest_summary() { grep -E '^\[  (FAILED|PASSED)|tests? ran' "$LOGS/$1.log" >> "$SUMMARY"; }  # of step $1

GTEST=$DMPN_BUNDLE/bin/dmpn_test  # by full path: death tests re-execute argv[0], not via PATH
if want parity; then
  step parity 60 "$GTEST" --gtest_filter='*GPUParity*' || { echo "parity failed: stopping"; exit 1; }
fi

if want tiled; then
  step tiled 120 "$GTEST" --gtest_filter='*TiledGPU*'
  gtest_summary "tiled"
fi

if want direct; then
  # The GPU cases of the solve's typed tests (GPUDevice<float>, <double>) and its parity tests,
  # with direct launches (the other steps replay CUDA graphs, the layer's default).
  DMPN_CUDA_GRAPHS=0 step direct 120 "$GTEST" \
    --gtest_filter="${DIRECT_FILTER:-SparseLaplacianSolveLayerTest/2.*:SparseLaplacianSolveLayerTest/3.*:*SparseLaplacianSolveGPUParity*}"
  gtest_summary "direct"
fi

if want tunings; then
  for tuning in ${TUNINGS[@]+"${TUNINGS[@]}"}; do
    name=tuning_${tuning//\//-}  # a log's name: SWEEPS/BLOCK_SWEEPS as SWEEPS-BLOCK_SWEEPS
    DMPN_GPU_MULTIGRID=$tuning step "$name" 60 "$GTEST" \
      --gtest_filter="${TUNINGS_FILTER:-*SparseLaplacianSolveGPUParity*}"
    gtest_summary "$name"
  done
fi

if want bench; then
  BENCH_TUNINGS=()  # the tunings time the CUDA layer: not in a CPU dry run
  [[ -n $BENCH_GPU && ${#TUNINGS[@]} -gt 0 ]] && BENCH_TUNINGS=(--gpu-multigrid "${TUNINGS[@]}")
  # GLOG_v=1: the log (logs.tar.gz, bench.log) names each solve's CG iterations
  GLOG_v=1 GLOG_logtostderr=1 GLOG_minloglevel=0 \
    step bench 180 "$DMPN_PYTHON" "$REPO/tools/bench_propagation.py" $BENCH_GPU --no-python --repeats 5 \
    ${BENCH_TUNINGS[@]+"${BENCH_TUNINGS[@]}"} --json "$RESULTS/bench.json"
fi

if want profile; then
  NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [[ -n $NCU && -z ${DRY_RUN_CPU:-} ]]; then
    # One metric, so one pass per kernel; the clocks left alone. The layer's own kernels only
    # (cuBLAS and Caffe's are not part of the solve). ncu runs Python of its own, which the
    # bundle's PYTHONHOME and PYTHONPATH would break (a traceback after its report): those go
    # to the profiled program alone.
    DMPN_CUDA_GRAPHS=0 DMPN_GPU_MULTIGRID=$PROFILE_MULTIGRID TAIL=5 step profile 120 \
      env -u PYTHONHOME -u PYTHONPATH "$NCU" --clock-control none \
      --metrics gpu__time_duration.sum --print-summary per-kernel --launch-count 4000 \
      --kernel-name 'regex:SmoothColor|FirstHalfSweep|ResidualRestrict|ProlongAdd|Tiled|BlockVCycle|OperatorDot|CgUpdateDot|Dot|BuildSystem|AddDegrees|Coarsen|Densify|Cholesky|LevelToFloat|Convert|DivideByDiag|ScaleInPlace|Upsample|EdgeGradient' \
      env PYTHONHOME="$PYTHONHOME" PYTHONPATH="$PYTHONPATH" \
      "$DMPN_PYTHON" "$REPO/tools/bench_propagation.py" --profile-once
    "$DMPN_PYTHON" "$REPO/tools/bench_propagation.py" --ncu-summary "$LOGS/profile.log" 2>&1 | tee -a "$SUMMARY"
  else
    echo "profile: ncu not found (or a CPU dry run)" | tee -a "$SUMMARY"
  fi
fi

if want gtest; then
  TAIL=60 step gtest 300 "$GTEST" --gtest_filter="${GTEST_FILTER:-*}" --gtest_output="xml:$LOGS/gtest.xml"
  gtest_summary "gtest"
fi

if want time; then
  step deploy_net 60 "$DMPN_PYTHON" -c "from dmpn import net as N; open('$WORK/deploy_608x800.prototxt', 'w').write(str(N.deploy(N.NetConfig(), 608, 800)))"
  step caffe_time 60 "$DMPN_BUNDLE/bin/caffe" time -model "$WORK/deploy_608x800.prototxt" ${DEV[@]} -iterations 20
  grep -E 'Average (Forward|Backward|Forward-Backward)|Total Time' "$LOGS/caffe_time.log" >> "$SUMMARY"
fi

if want train; then
  RUN=$WORK/train
  mkdir -p "$RUN" && ln -s "$REPO/prototxt" "$RUN/prototxt"
  # Crops of 320 (train_val.prototxt) need originals larger than the demo's 192.
  step make_lmdb 60 "$DMPN_PYTHON" "$REPO/tools/make_lmdb.py" --out "$RUN/data" --preset demo \
    --synthetic 8 --size 400x400 --test-originals 1
  sed -e "s/^max_iter: .*/max_iter: $TRAIN_ITERS/" -e "s/^solver_mode: .*/solver_mode: $MODE/" -e "s|^snapshot_prefix: .*|snapshot_prefix: \"$RUN/snap\"|" \
    "$REPO/prototxt/solver.prototxt" > "$RUN/solver.prototxt"
  (cd "$RUN" && step caffe_train 120 "$DMPN_BUNDLE/bin/caffe" train -solver solver.prototxt "${DEV[@]}")
  grep -E 'Iteration [0-9]+ \(.*loss' "$LOGS/caffe_train.log" > "$LOGS/train_loss.txt"
  sed -n '1p;$p' "$LOGS/train_loss.txt" >> "$SUMMARY"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$SUMMARY" 2>/dev/null
fi

if want sanitize; then
  SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  if [[ -n $SAN ]]; then
    # death tests left out: their re-executed child loses its message under the sanitizer; the
    # tiled smoother's test (outside the parity tests) in: its shared-memory indexing
    step sanitize 150 "$SAN" --tool memcheck --error-exitcode 3 "$GTEST" \
      --gtest_filter='*GPUParity*:*TiledGPU*:-*IsAnError'
    grep -E 'ERROR SUMMARY|tests? ran' "$LOGS/sanitize.log" >> "$SUMMARY"
    # the tiled smoother's barriers on the hardware: __syncthreads() every thread reaches
    # (synccheck), and no shared-memory access between two barriers that another thread's
    # conflicts with (racecheck)
    # (racecheck did not finish the float case in 90 s on an H100: the float case of the
    # float64 hierarchy alone, last; the float32 hierarchy's tiles are the same code)
    for tool in synccheck racecheck; do
      filter='*TiledGPU*' limit=120
      [[ $tool == racecheck ]] && filter='*TiledGPU*/0.TestTiledSmootherGivesTheSameResults' limit=240
      step "sanitize_$tool" "$limit" "$SAN" --tool "$tool" --error-exitcode 3 "$GTEST" --gtest_filter="$filter"
      grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|tests? ran' "$LOGS/sanitize_$tool.log" >> "$SUMMARY"
    done
  else
    echo "sanitize: compute-sanitizer not found" | tee -a "$SUMMARY"
  fi
fi

tar -czf "$RESULTS/logs.tar.gz" -C "$LOGS" .
echo "=== summary"
cat "$SUMMARY"
