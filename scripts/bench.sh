#!/usr/bin/env bash
# The main job: builds attnkit_bench and times every CPU variant against the dense reference
# and an Eigen sgemm, printing a markdown table (also written to build-bench/bench-cpu.md),
# then the decode rows (GB/s of K+V read against the machine's stream-read bandwidth).
#   scripts/bench.sh                         # N = 1024, 4096, 1 thread (about a minute)
#   scripts/bench.sh --threads=1,2 --table_out=bench/results/cpu.md
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
build=${BUILD_DIR:-build-bench}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DATTNKIT_BUILD_TESTS=OFF -DATTNKIT_BUILD_EXAMPLES=OFF \
      -DATTNKIT_BUILD_BENCH=ON -DATTNKIT_ENABLE_CUDA=OFF > /dev/null
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target attnkit_bench
table=$build/bench-cpu.md
args=("$@")
[[ " $* " == *" --table_out="* ]] || args+=(--table_out="$table")
"$build"/bench/attnkit_bench --benchmark_counters_tabular=true "${args[@]}"
