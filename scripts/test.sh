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
    cuda_args=(-DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90a-real}"
               -DATTNKIT_CUDA_PORTABILITY_ARCHS="${CUDA_PORTABILITY_ARCHS:-80-real}")
  fi
fi

# The CPU benchmark (the README's main job) is built as a compile check; the CUDA benchmark is
# not a test and is built where it runs (scripts/build_on_device.sh), which keeps about 4 minutes
# of nvcc on 2 cores out of CI (ATTNKIT_BUILD_CUDA_BENCH=ON builds it here too).
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DATTNKIT_WERROR=ON \
      -DATTNKIT_SANITIZE="${ATTNKIT_SANITIZE:-OFF}" -DATTNKIT_BUILD_TESTS=ON -DATTNKIT_BUILD_EXAMPLES=ON -DATTNKIT_BUILD_BENCH=ON \
      -DATTNKIT_BUILD_CUDA_BENCH="${ATTNKIT_BUILD_CUDA_BENCH:-OFF}" "${cuda_args[@]}"
start=$(date +%s)
cmake --build "$build" -j "$jobs"
echo "attnkit: build took $(( $(date +%s) - start )) s"
ctest --test-dir "$build" -j "$jobs" --output-on-failure
