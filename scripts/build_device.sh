#!/usr/bin/env bash
# Builds the GPU tests and the CUDA benchmark here (nvcc needs no GPU) for the device script:
# binaries land in build-device-bin/, which the device call carries (bench/cuda/run_device.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
cmake -S . -B build-device -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" \
      -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90a-real}" -DATTNKIT_BUILD_TESTS=ON -DATTNKIT_BUILD_BENCH=ON \
      -DATTNKIT_BUILD_EXAMPLES=OFF -DATTNKIT_CUDA_FAST_COMPILE=OFF > /dev/null  # binaries that run: fully optimised
# TARGETS="..." builds a subset (quick iterations); the default is everything the device script runs.
read -r -a targets <<< "${TARGETS:-attnkit_bench_cuda test_cuda_matrix_softmax test_cuda_matrix_softmax_masks test_cuda_matrix_sigmoid test_cuda_matrix_softplus test_cuda_matrix_linear test_cuda_api test_cuda_neighborhood test_cuda_inference test_cuda_gmma}"
cmake --build build-device -j "${JOBS:-$(nproc)}" --target "${targets[@]}"
rm -rf build-device-bin && mkdir -p build-device-bin/tests/cuda build-device-bin/bench/cuda
for t in "${targets[@]}"; do
  if [[ $t == attnkit_bench_cuda ]]; then cp build-device/bench/cuda/$t build-device-bin/bench/cuda/
  else cp build-device/tests/cuda/$t build-device-bin/tests/cuda/; fi
done
rm -f build-device-bin/tests/cuda/*.cmake
du -sh build-device-bin
