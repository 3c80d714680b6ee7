#!/usr/bin/env bash
# One device call: the CUDA benchmark and torch SDPA / FlexAttention on the same workloads (first,
# so that the table is written however long the rest takes), the GPU tests, and compute-sanitizer
# memcheck/racecheck on small cases; results under $OUT.
# Expects binaries built on the host by scripts/build_device.sh into build-device-bin/, carried along.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/attnkit-out}
mkdir -p "$OUT"
bin=build-device-bin
status=0
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

echo "== benchmark"
# The H100 runs these kernels at its software power cap: the clock and power seen meanwhile go
# into the table's header (samples every 100 ms; those with the GPU-idle reason bit left out).
nvidia-smi --query-gpu=clocks.sm,power.draw,clocks_throttle_reasons.active --format=csv,noheader,nounits -lms 100 \
  > "$OUT/clocks.csv" 2>/dev/null & smi=$!
"$bin"/bench/cuda/attnkit_bench_cuda "$@" | tee "$OUT/ours.jsonl"
kill $smi 2>/dev/null
python3 bench/cuda/compare_torch.py "$OUT/ours.jsonl" "$OUT/table.md" 2> "$OUT/torch_stderr.log" || echo "compare_torch failed: $(tail -5 "$OUT/torch_stderr.log")"
# The same kernels timed again: the spread between the two runs is the noise floor.
{ "$bin"/bench/cuda/attnkit_bench_cuda --only="N=16384" "$@"; "$bin"/bench/cuda/attnkit_bench_cuda --only="KV=32768" "$@"; } > "$OUT/ours_repeat.jsonl"
{
  echo "# attnkit CUDA benchmark"
  echo
  echo "- device: $(head -2 "$OUT/gpu.txt" | tail -1)"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- clocks during our benchmark rows: $(awk -F', *' '$1 + 0 > 0 && !index("13579bdfBDF", substr($3, length($3))) {n++; c += $1; p += $2; if (!m || $1 < m) m = $1; if (index("4567cdefCDEF", substr($3, length($3)))) cap++} END {if (n) printf "SM clock mean %.0f MHz (lowest %d), power mean %.0f W, software power cap active in %.0f%% of %d busy samples", c / n, m, p / n, 100 * cap / n, n; else printf "not sampled"}' "$OUT/clocks.csv" 2>/dev/null)"
  echo "- torch: $(python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null)"
  echo "- command: \`bench/cuda/run_device.sh $*\` (binaries from \`scripts/build_device.sh\` or \`scripts/build_on_device.sh\`, nvcc 13.0, sm_90a)"
  echo "- method: CUDA events around each launch, 3 warm-up launches, median of 30; inputs uniform in [-1, 1],"
  echo "  bf16, B=1, H=16 (N=4096 row: B=4); TFLOP/s = allowed (query, key) pairs x 4 x D / time (useful work;"
  echo "  causal counts N(N+1)/2 pairs). torch timed the same way in the same process run."
  echo "  Decode rows: TB/s = bytes of K and V read / time (q, o and the split merge not counted)."
  echo
  cat "$OUT/table.md"
  echo
  echo "Repeat of attnkit's N=16384 rows in the same run (TFLOP/s, first / second):"
  echo
  python3 - "$OUT/ours.jsonl" "$OUT/ours_repeat.jsonl" <<'PY'
import json, sys
a = {r["workload"]: r for r in map(json.loads, filter(lambda l: l.startswith("{"), open(sys.argv[1])))}
for l in open(sys.argv[2]):
    if l.startswith("{"):
        r = json.loads(l)
        key = "tbps" if r.get("kind") == "decode" else "tflops"
        print(f"- {r['workload']}: {a[r['workload']][key]:.2f} / {r[key]:.2f}")
PY
} > "$OUT/h100.md"
cat "$OUT/h100.md" | tail -20
echo "== GPU tests"
for t in "$bin"/tests/cuda/test_cuda_*; do
  [[ -x $t ]] || continue
  "$t" --order rand > "$OUT/$(basename "$t").log" 2>&1; rc=$?
  echo "$(basename "$t"): exit $rc, $(tail -2 "$OUT/$(basename "$t").log" | tr '\n' ' ')"
  ((rc == 0)) || status=1
done

echo "== compute-sanitizer"
cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
# SANITIZE: the tests to check, ';'-separated (default: all five below; a call short of device
# time names fewer).
IFS=';' read -r -a sanitize <<< "${SANITIZE:-test_cuda_matrix_softmax;test_cuda_matrix_linear;test_cuda_api;test_cuda_neighborhood;test_cuda_inference [paged],[merge]}"
for t in "${sanitize[@]}"; do
  name=${t%% *}
  [[ -x $bin/tests/cuda/$name ]] || continue  # a partial build (scripts/build_device.sh TARGETS=...)
  for tool in memcheck racecheck; do
    # shellcheck disable=SC2086  # the test name and its Catch2 filter are two words
    "$cs" --tool $tool --error-exitcode 9 "$bin"/tests/cuda/$t > "$OUT/sanitizer_${tool}_$name.log" 2>&1
    echo "$tool ($t): exit $? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_${tool}_$name.log" | head -1)"
  done
done

exit $status
