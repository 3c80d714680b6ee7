#!/usr/bin/env bash
# One device call: GPU tests, compute-sanitizer memcheck/racecheck on small cases, the CUDA
# benchmark and torch SDPA / FlexAttention on the same workloads; results under $OUT.
# Expects binaries built on the host by scripts/build_device.sh into build-device-bin/, carried along.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/attnkit-out}
mkdir -p "$OUT"
bin=build-device-bin
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

echo "== GPU tests"
status=0
for t in "$bin"/tests/cuda/test_cuda_*; do
  [[ -x $t ]] || continue
  "$t" --order rand > "$OUT/$(basename "$t").log" 2>&1; rc=$?
  echo "$(basename "$t"): exit $rc, $(tail -2 "$OUT/$(basename "$t").log" | tr '\n' ' ')"
  ((rc == 0)) || status=1
done

echo "== compute-sanitizer"
cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for tool in memcheck racecheck; do
  "$cs" --tool $tool --error-exitcode 9 "$bin"/tests/cuda/test_cuda_api "cuda: head dims*" > "$OUT/sanitizer_$tool.log" 2>&1
  echo "$tool (test_cuda_api head dims): exit $? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_$tool.log" | head -1)"
done
"$cs" --tool memcheck --error-exitcode 9 "$bin"/tests/cuda/test_cuda_matrix_softmax > "$OUT/sanitizer_memcheck_matrix.log" 2>&1
echo "memcheck (softmax matrix): exit $? $(grep 'ERROR SUMMARY' "$OUT/sanitizer_memcheck_matrix.log" | head -1)"

echo "== benchmark"
"$bin"/bench/cuda/attnkit_bench_cuda "$@" | tee "$OUT/ours.jsonl"
python3 bench/cuda/compare_torch.py "$OUT/ours.jsonl" "$OUT/h100.md" 2> "$OUT/torch_stderr.log" || echo "compare_torch failed: $(tail -5 "$OUT/torch_stderr.log")"
exit $status
