#!/usr/bin/env bash
# Builds everything (the CUDA tests too when nvcc is found) with warnings as errors and runs
# every test that needs no GPU; GPU tests skip with a message when no GPU is present.
#   scripts/test.sh                  # Release build in build/
#   (sanitizer build: scripts/sanitize.sh; fuzzing: scripts/fuzz.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

build=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
cuda_args=()
if [[ -z ${ATTNKIT_NO_CUDA:-} ]]; then
  nvcc=$(command -v nvcc || true)
  [[ -z $nvcc && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
  if [[ -n $nvcc ]]; then
    # Every CUDA test for Hopper (sm_90a, what the device runs); the API test, which reaches every
    # kernel family, also for Ampere (sm_80), which proves the mma.sync path compiles at a
    # fraction of the time of building the whole matrix twice.
    # Without a GPU the GPU tests cannot run, so their device code is compiled for compile speed
    # (nvcc -Ofc=max): measured on 2 cores, 42-148 s a test instead of 174-604 s (ptxas and NVVM
    # optimising are most of it). Where a GPU answers, they are built as users build them.
    # CUDA_FAST_COMPILE=ON/OFF overrides the detection.
    fast=${CUDA_FAST_COMPILE:-}
    if [[ -z $fast ]]; then
      if nvidia-smi -L 2> /dev/null | grep -q '^GPU'; then fast=OFF; else fast=ON; fi
    fi
    cuda_args=(-DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90a-real}"
               -DATTNKIT_CUDA_PORTABILITY_ARCHS="${CUDA_PORTABILITY_ARCHS:-80-real}"
               -DATTNKIT_CUDA_FAST_COMPILE="$fast")
  fi
fi

# The CPU benchmark (the README's main job) is built as a compile check; the CUDA benchmark is
# not a test and is built where it runs (scripts/build_on_device.sh), which keeps about 4 minutes
# of nvcc on 2 cores out of CI (ATTNKIT_BUILD_CUDA_BENCH=ON builds it here too).
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DATTNKIT_WERROR=ON \
      -DATTNKIT_SANITIZE="${ATTNKIT_SANITIZE:-OFF}" -DATTNKIT_BUILD_TESTS=ON -DATTNKIT_BUILD_EXAMPLES=ON -DATTNKIT_BUILD_BENCH=ON \
      -DATTNKIT_BUILD_CUDA_BENCH="${ATTNKIT_BUILD_CUDA_BENCH:-OFF}" "${cuda_args[@]}"
start=$(date +%s)
# (ptxas reports the wgmma it serialises in device code compiled for speed, "ptxas info (C75xx)"
# lines that say nothing about correctness: left out of the log.)
cmake --build "$build" -j "$jobs" 2>&1 | sed '/^ptxas info    : (C75[0-9][0-9])/d'
echo "attnkit: build took $(( $(date +%s) - start )) s"
ctest --test-dir "$build" -j "$jobs" --output-on-failure
