#!/usr/bin/env bash
# A quick device iteration (scripts/build_device.sh TARGETS=... first): the named GPU test
# binaries, then the CUDA benchmark's rows matching each --only filter; logs under $OUT.
#   scripts/device_quick.sh "N=16384,N=4096" [test-binary-args]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/attnkit-out}
mkdir -p "$OUT"
bin=build-device-bin
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
for t in "$bin"/tests/cuda/test_cuda_*; do
  [[ -x $t ]] || continue
  timeout 300 "$t" --order rand "${@:2}" > "$OUT/$(basename "$t").log" 2>&1
  echo "$(basename "$t"): exit $? $(tail -2 "$OUT/$(basename "$t").log" | tr '\n' ' ')"
done
if [[ -x $bin/bench/cuda/attnkit_bench_cuda ]]; then
  IFS=, read -r -a filters <<< "${1:-N=16384}"
  for f in "${filters[@]}"; do "$bin"/bench/cuda/attnkit_bench_cuda --only="$f"; done | tee "$OUT/ours.jsonl"
fi
