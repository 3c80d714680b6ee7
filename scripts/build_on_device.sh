#!/usr/bin/env bash
# Builds the GPU tests and the CUDA benchmark on the device machine itself (16 cores, no CMake
# or apt there): nvcc on every translation unit at once, into build-device-bin/ as
# scripts/build_device.sh does on the host, so bench/cuda/run_device.sh runs them unchanged.
# The Catch2 and Eigen headers travel in .devdeps/ (ignored by git; carry it):
#   scripts/build_on_device.sh --pack            # here, once: copies the headers into .devdeps/
#   scripts/build_on_device.sh && bench/cuda/run_device.sh     # on the device
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --pack ]]; then
  mkdir -p .devdeps/catch2
  cp -r /usr/include/eigen3 .devdeps/
  cp /usr/include/catch2/catch.hpp .devdeps/catch2/
  exit 0
fi
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
bin=build-device-bin
mkdir -p "$bin/obj" "$bin/tests/cuda" "$bin/bench/cuda"
flags=(-O3 -DNDEBUG -gencode=arch=compute_90a,code=sm_90a -std=c++20 --expt-relaxed-constexpr -diag-suppress=20012
       -Iinclude -isystem .devdeps/eigen3 -isystem .devdeps)
start=$SECONDS
pids=()
for tu in tests/catch2_session.cpp tests/cuda/cuda_main.cpp tests/cuda/test_cuda_*.cu bench/cuda/bench_cuda.cu; do
  name=$(basename "${tu%.*}")
  "$nvcc" "${flags[@]}" -c "$tu" -o "$bin/obj/$name.o" > "$bin/obj/$name.log" 2>&1 &
  pids+=("$!:$name")
done
failed=0
for p in "${pids[@]}"; do
  wait "${p%%:*}" || { echo "compile failed: ${p#*:}"; tail -20 "$bin/obj/${p#*:}.log"; failed=1; }
done
((failed == 0)) || exit 1
for t in tests/cuda/test_cuda_*.cu; do
  name=$(basename "$t" .cu)
  "$nvcc" -gencode=arch=compute_90a,code=sm_90a "$bin/obj/$name.o" "$bin/obj/cuda_main.o" "$bin/obj/catch2_session.o" -o "$bin/tests/cuda/$name"
done
"$nvcc" -gencode=arch=compute_90a,code=sm_90a "$bin/obj/bench_cuda.o" -o "$bin/bench/cuda/attnkit_bench_cuda"
echo "build_on_device: $((SECONDS - start)) s"
